"""train-rewards: one value classifier per moral value; held-out accuracy and F1 as metrics."""

from cmva.kfp_components import train_rewards

__all__ = ["train_rewards"]
