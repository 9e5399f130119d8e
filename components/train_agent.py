"""train-agent: RL (TRL RLOO + LoRA, KL to the PT model) against one value's reward."""

from cmva.kfp_components import train_agent

__all__ = ["train_agent"]
