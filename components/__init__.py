"""KFP components, one module per stage: re-exports of `cmva.kfp_components`, where they are defined so that
`cmva pipeline compile|submit` work from an installed wheel and inside the train image."""

from cmva.kfp_components import TRAIN_IMAGE, cmva_component

__all__ = ["TRAIN_IMAGE", "cmva_component"]
