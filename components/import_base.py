"""import-base: base model → plain safetensors checkpoint (GGUF-loaded models refuse training)."""

from kfp.dsl import Model, Output

from components import cmva_component


@cmva_component
def import_base(profile: str, overrides: dict, base: Output[Model]):
    from cmva.kfp_ops import atomic_dir, import_base_op

    with atomic_dir(base.path) as out:
        base.metadata.update(import_base_op(profile, overrides, out))
