"""build-aggregator-data: every agent's answer per MIC training question; rows with c·r(y)-best targets."""

from cmva.kfp_components import build_aggregator_data

__all__ = ["build_aggregator_data"]
