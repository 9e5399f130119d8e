"""publish-for-serving: base, rewards, agents and aggregator under <store_uri>/<run id>/ with a release record."""

from cmva.kfp_components import publish_for_serving

__all__ = ["publish_for_serving"]
