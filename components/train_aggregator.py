"""train-aggregator: LoRA SFT of the contextual aggregator (loss on the answer tokens only)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import cmva_component


@cmva_component
def train_aggregator(profile: str, overrides: dict, base: Input[Model], data: Input[Dataset], aggregator: Output[Model], metrics: Output[Metrics]):
    from cmva.kfp_ops import atomic_dir, log_metrics, train_aggregator_op

    with atomic_dir(aggregator.path) as out:
        result = train_aggregator_op(profile, overrides, base.path, data.path, out)
    log_metrics(metrics, result)
