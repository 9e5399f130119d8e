"""The kserve.Model of the transformer role lives in cmva.serving (all logic in cmva/)."""

from cmva.serving.transformer import CMVATransformer, parse_routes

__all__ = ["CMVATransformer", "parse_routes"]
