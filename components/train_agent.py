"""train-agent: RL (TRL RLOO + LoRA, KL to the PT model) against one value's reward."""

from kfp.dsl import Input, Metrics, Model, Output

from components import cmva_component


@cmva_component
def train_agent(value: str, profile: str, overrides: dict, values: list, mic_uri: str, base: Input[Model], rewards: Input[Model], agent: Output[Model], metrics: Output[Metrics]):
    from cmva.kfp_ops import atomic_dir, log_metrics, train_agent_op

    with atomic_dir(agent.path) as out:
        result = train_agent_op(value, profile, overrides, values, mic_uri, base.path, rewards.path, out)
    agent.metadata["value"] = value
    log_metrics(metrics, result)
