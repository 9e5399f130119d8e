"""build-aggregator-data: every agent's answer per MIC training question; rows under several profiles c, each
with the candidate of highest normalised c·r(y) as target (cmva.aggregator_data)."""

from kfp.dsl import Dataset, Input, Model, Output

from components import cmva_component


@cmva_component
def build_aggregator_data(profile: str, overrides: dict, values: list, mic_uri: str, base: Input[Model], agents: Input[list[Model]], rewards: Input[Model], data: Output[Dataset]):
    from cmva.kfp_ops import atomic_dir, build_aggregator_data_op

    with atomic_dir(data.path) as out:
        data.metadata.update(build_aggregator_data_op(profile, overrides, values, mic_uri, base.path, [a.path for a in agents], rewards.path, out))
