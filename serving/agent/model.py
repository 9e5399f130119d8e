"""The kserve.Model of the agent role lives in cmva.serving (all logic in cmva/)."""

from cmva.serving.predictors import AgentModel, SharedBackend

__all__ = ["AgentModel", "SharedBackend"]
