"""import-base: base model → plain safetensors checkpoint (GGUF-loaded models refuse training)."""

from cmva.kfp_components import import_base

__all__ = ["import_base"]
