"""quality-gate: 'pass' when the evaluation clears the recipe's gate thresholds; verdict as metrics + Markdown."""

from cmva.kfp_components import quality_gate

__all__ = ["quality_gate"]
