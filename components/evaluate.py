"""evaluate: ROUGE vs baselines, agent conformity, profile sensitivity; report as Markdown and HTML."""

from cmva.kfp_components import evaluate

__all__ = ["evaluate"]
