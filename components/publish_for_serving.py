"""publish-for-serving: base, rewards, agents and aggregator to MinIO under a versioned prefix for KServe."""

from kfp.dsl import Input, Model

from components import cmva_component


@cmva_component
def publish_for_serving(store_uri: str, version: str, base: Input[Model], rewards: Input[Model], agents: Input[list[Model]], aggregator: Input[Model]) -> str:
    from cmva.kfp_ops import publish_op

    return publish_op(store_uri, version, base.path, rewards.path, [a.path for a in agents], aggregator.path)
