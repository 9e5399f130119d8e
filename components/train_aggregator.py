"""train-aggregator: LoRA SFT of the contextual aggregator (loss on the answer tokens only)."""

from cmva.kfp_components import train_aggregator

__all__ = ["train_aggregator"]
