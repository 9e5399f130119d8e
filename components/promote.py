"""promote: make a serving channel (<store_uri>/channels/<channel>) serve this run's artifacts."""

from cmva.kfp_components import promote

__all__ = ["promote"]
