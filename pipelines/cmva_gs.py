"""The CMVA-GS pipeline: a re-export of `cmva.kfp_pipeline` (wiring only; every stage is a component).

$ cmva pipeline compile --out build/        # IR YAML (submit uploads it to the dashboard's Pipelines)
$ cmva pipeline run --local --profile smoke # the same DAG under kfp.local
"""

from cmva.kfp_pipeline import PIPELINE_NAME, build_pipeline

__all__ = ["PIPELINE_NAME", "build_pipeline"]
