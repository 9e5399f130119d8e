"""collect-agents: the trained agents as one artifact, one subdirectory per value."""

from cmva.kfp_components import collect_agents

__all__ = ["collect_agents"]
