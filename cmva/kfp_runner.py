"""Compile, run locally (kfp.local) or submit (kfp.Client) the CMVA-GS pipeline.

$ cmva pipeline compile --out build/
$ cmva pipeline run --local --profile smoke --root runs/kfp-smoke
$ cmva pipeline submit --host https://kubeflow.example.com/pipeline --profile paper
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from cmva.config import PlatformCfg

log = logging.getLogger(__name__)

PIPELINE_FILE = "cmva_gs.yaml"


def platform_from_env(path: str | Path | None = None) -> PlatformCfg:
    """Kubernetes settings: a YAML file, else CMVA_IMAGE / CMVA_GPU_* / CMVA_S3_* environment variables."""
    import yaml

    if path:
        return PlatformCfg.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    env = {
        "image": os.environ.get("CMVA_TRAIN_IMAGE"),
        "accelerator_type": os.environ.get("CMVA_GPU_TYPE"),
        "accelerator_count": os.environ.get("CMVA_GPU_COUNT"),
        "s3_secret": os.environ.get("CMVA_S3_SECRET"),
        "s3_endpoint_url": os.environ.get("CMVA_S3_ENDPOINT_URL"),
        "agent_parallelism": os.environ.get("CMVA_AGENT_PARALLELISM"),
    }
    return PlatformCfg.model_validate({k: v for k, v in env.items() if v})


def _pipeline(platform: PlatformCfg):
    # Components read their image at import: set it first, and make the repo's packages importable.
    os.environ["CMVA_TRAIN_IMAGE"] = platform.image
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from pipelines.cmva_gs import build_pipeline

    return build_pipeline(platform)


def compile_pipeline(out_dir: str | Path, platform: PlatformCfg | None = None) -> Path:
    """Write the pipeline's IR YAML (upload it in the Kubeflow dashboard)."""
    from kfp import compiler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PIPELINE_FILE
    compiler.Compiler().compile(_pipeline(platform or PlatformCfg()), str(path))
    return path


def run_local(
    root: str | Path,
    profile: str = "smoke",
    overrides: dict | None = None,
    values: list | None = None,
    mic_uri: str = "",
    socialchem_uri: str = "",
    store_uri: str | None = None,
) -> Path:
    """Run the pipeline under kfp.local (SubprocessRunner, this Python env), caching on.

    Outputs land under `<root>/outputs/<run>/<task>/`; the cache under `<root>/cache` makes a rerun
    after a failure reuse every finished task. Returns the evaluation report directory.
    """
    from kfp import local

    root = Path(root).resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "outputs"),
        enable_caching=True,
        cache_root=str(root / "cache"),
    )
    pipeline = _pipeline(PlatformCfg(agent_parallelism=1))  # one machine: one trainer at a time
    args = dict(
        profile=profile,
        overrides=overrides or {},
        mic_uri=mic_uri,
        socialchem_uri=socialchem_uri,
        store_uri=store_uri or str(root / "serving"),
    )
    if values:
        args["values"] = list(values)
    pipeline(**args)
    reports = sorted((root / "outputs").glob("cmva-gs-*/evaluate/report"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise RuntimeError(f"the local pipeline finished without an evaluation report under {root / 'outputs'}")
    return reports[-1]


def submit(
    host: str,
    profile: str = "paper",
    overrides: dict | None = None,
    platform: PlatformCfg | None = None,
    experiment: str = "cmva",
    **params,
) -> str:
    """Submit a run to Kubeflow Pipelines; returns the run id."""
    import kfp

    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(
        _pipeline(platform or PlatformCfg()),
        arguments={"profile": profile, "overrides": overrides or {}, **params},
        experiment_name=experiment,
        enable_caching=True,
    )
    log.info("submitted run %s", run.run_id)
    return run.run_id


def local_task_dirs(root: str | Path) -> dict[str, list[Path]]:
    """Task output directories of every local run under root (for inspection and tests)."""
    out: dict[str, list[Path]] = {}
    for run in sorted((Path(root) / "outputs").glob("cmva-gs-*")):
        for task in run.iterdir():
            if task.is_dir():
                out.setdefault(task.name, []).append(task)
    return out


def summarize_report(report_dir: Path) -> str:
    report = json.loads((report_dir / "report.json").read_text())
    return json.dumps({s: round(r["rougeL"], 4) for s, r in report["rouge"].items()})


def latest_serving_dir(root: str | Path) -> Path:
    """The newest version published by the pipeline's publish-for-serving step under `<root>/serving/`."""
    dirs = [d for d in (Path(root) / "serving").glob("*") if (d / "aggregator" / "_manifest.json").is_file()]
    if not dirs:
        raise FileNotFoundError(f"no published serving artifacts under {Path(root) / 'serving'}")
    return max(dirs, key=lambda d: (d / "aggregator" / "_manifest.json").stat().st_mtime)
