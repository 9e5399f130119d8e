"""train-rewards: one value classifier per moral value; held-out accuracy and F1 as metrics."""

from kfp.dsl import Metrics, Model, Output

from components import cmva_component


@cmva_component
def train_rewards(profile: str, overrides: dict, values: list, mic_uri: str, socialchem_uri: str, rewards: Output[Model], metrics: Output[Metrics]):
    from cmva.kfp_ops import atomic_dir, log_metrics, train_rewards_op

    with atomic_dir(rewards.path) as out:
        result = train_rewards_op(profile, overrides, values, mic_uri, socialchem_uri, out)
    log_metrics(metrics, result)
