"""KFP components: one per stage, each a thin call into cmva (`cmva.kfp_ops`).

All run on the Dockerfile.train image (set CMVA_TRAIN_IMAGE to your registry's tag before compiling),
which already has cmva and kfp installed: nothing is pip-installed at run time (air-gapped on-prem).
"""

import functools
import os

from kfp import dsl

TRAIN_IMAGE = os.environ.get("CMVA_TRAIN_IMAGE", "ghcr.io/cmva/cmva-train:0.1.0")

cmva_component = functools.partial(dsl.component, base_image=TRAIN_IMAGE, install_kfp_package=False)
