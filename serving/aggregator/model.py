"""The kserve.Model of the aggregator role lives in cmva.serving (all logic in cmva/)."""

from cmva.serving.predictors import AggregatorModel, SharedBackend

__all__ = ["AggregatorModel", "SharedBackend"]
