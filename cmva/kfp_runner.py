"""Compile, run locally (kfp.local) or submit (kfp.Client) the CMVA-GS pipeline.

$ cmva pipeline compile --out build/ --profile paper
$ cmva pipeline run --local --profile smoke --root runs/kfp
$ cmva pipeline submit --host https://kubeflow.example.com/pipeline --namespace team-a --profile paper

Everything needed lives in the cmva package (`cmva.kfp_pipeline`, `cmva.kfp_components`), so these work from
an installed wheel and inside the train image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cmva.config import PlatformCfg

log = logging.getLogger(__name__)

PIPELINE_FILE = "cmva_gs.yaml"


def platform_from_env(path: str | Path | None = None) -> PlatformCfg:
    """Kubernetes settings: a YAML file, else CMVA_TRAIN_IMAGE / CMVA_IMAGE_DIGEST / CMVA_GPU_* / CMVA_S3_* …"""
    import yaml

    if path:
        return PlatformCfg.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    env = {
        "image": os.environ.get("CMVA_TRAIN_IMAGE"),
        "image_digest": os.environ.get("CMVA_IMAGE_DIGEST"),
        "image_pull_secrets": [s for s in os.environ.get("CMVA_IMAGE_PULL_SECRETS", "").split(",") if s],
        "accelerator_type": os.environ.get("CMVA_GPU_TYPE"),
        "accelerator_count": os.environ.get("CMVA_GPU_COUNT"),
        "s3_secret": os.environ.get("CMVA_S3_SECRET"),
        "s3_endpoint_url": os.environ.get("CMVA_S3_ENDPOINT_URL"),
        "agent_parallelism": os.environ.get("CMVA_AGENT_PARALLELISM"),
    }
    return PlatformCfg.model_validate({k: v for k, v in env.items() if v})


def build(platform: PlatformCfg | None = None, values: list[str] | None = None, profile: str = "cpu"):
    """The pipeline function (`cmva.kfp_pipeline.build_pipeline`)."""
    from cmva.kfp_pipeline import build_pipeline

    return build_pipeline(platform or PlatformCfg(), values, profile)


def compile_pipeline(
    out_dir: str | Path, platform: PlatformCfg | None = None, values: list[str] | None = None, profile: str = "cpu"
) -> Path:
    """Write the pipeline's IR YAML (what `submit` uploads; it can also be uploaded in the dashboard)."""
    from kfp import compiler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PIPELINE_FILE
    compiler.Compiler().compile(build(platform, values, profile), str(path))
    return path


def run_local(
    root: str | Path,
    profile: str = "smoke",
    overrides: dict | None = None,
    values: list | None = None,
    mic_uri: str = "",
    socialchem_uri: str = "",
    store_uri: str | None = None,
    channel: str = "staging",
) -> Path:
    """Run the pipeline under kfp.local (SubprocessRunner, this Python env), caching on.

    Outputs land under `<root>/outputs/<run>/<task>/`; the cache under `<root>/cache` makes a rerun
    after a failure reuse every finished task. Publishing goes to `store_uri` (default `<root>/serving`),
    promotion to its `channels/<channel>` when the gate passes. Returns the evaluation report directory.
    """
    from kfp import local

    root = Path(root).resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "outputs"),
        enable_caching=True,
        cache_root=str(root / "cache"),
    )
    # One machine: one trainer at a time; no retries (a failure here is not a lost node); the S3 endpoint and
    # keys come from this environment (kfp.local applies a task's env variables, not the Kubernetes Secret).
    platform = PlatformCfg(agent_parallelism=1, retries=0, s3_endpoint_url=None)
    pipeline = build(platform, values, profile)
    pipeline(
        profile=profile,
        overrides=overrides or {},
        mic_uri=mic_uri,
        socialchem_uri=socialchem_uri,
        store_uri=store_uri or str(root / "serving"),
        channel=channel,
    )
    reports = sorted((root / "outputs").glob("cmva-gs-*/evaluate/report"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise RuntimeError(f"the local pipeline finished without an evaluation report under {root / 'outputs'}")
    return reports[-1]


def gate_verdict(report_dir: Path) -> str:
    """The quality gate's Markdown verdict of the local run whose evaluation report is `report_dir`."""
    md = report_dir.parents[1] / "quality-gate" / "verdict"
    return md.read_text() if md.is_file() else "(no quality-gate verdict found)"


@dataclass(frozen=True)
class Submitted:
    run_id: str
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str


def kfp_client(
    host: str | None,
    token: str | None = None,
    sa_token_path: str | None = None,
    cookies: str | None = None,
    ssl_ca_cert: str | None = None,
    kfp_namespace: str = "kubeflow",
):
    """A `kfp.Client` for multi-user Kubeflow: a bearer token (`existing_token`), the projected service-account
    token of a pod (`credentials`), or a session cookie from the dashboard's login."""
    import kfp

    if sum(bool(x) for x in (token, sa_token_path, cookies)) > 1:
        raise ValueError("give one of token, service-account token path, cookies")
    kwargs: dict = {"host": host, "namespace": kfp_namespace}
    if token:
        kwargs["existing_token"] = token
    if sa_token_path:
        kwargs["credentials"] = kfp.client.ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    if cookies:
        kwargs["cookies"] = cookies
    if ssl_ca_cert:
        kwargs["ssl_ca_cert"] = ssl_ca_cert
    return kfp.Client(**kwargs)


def _eq_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": 1, "key": key, "stringValue": value}]})  # 1: EQUALS


def upload(client, package: Path, name: str, description: str, namespace: str | None) -> tuple[str, str, str]:
    """Upload the pipeline (first time) or a new version of it, so it is listed in the dashboard's Pipelines;
    an identical IR reuses its version. Returns (pipeline id, version id, version name)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        cmva_version = version("cmva")
    except PackageNotFoundError:
        cmva_version = "dev"
    version_name = f"{name}-{cmva_version}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"
    found = client.list_pipelines(filter=_eq_filter("display_name", name), namespace=namespace).pipelines or []
    if not found:
        pipeline = client.upload_pipeline(
            str(package), pipeline_name=name, description=description, namespace=namespace
        )
        pipeline_id = pipeline.pipeline_id
    else:
        pipeline_id = found[0].pipeline_id
    versions = client.list_pipeline_versions(pipeline_id, filter=_eq_filter("display_name", version_name))
    if versions.pipeline_versions:
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id, version_name
    if not found:  # the first upload made the pipeline's first version: that is this IR
        first = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc").pipeline_versions
        return pipeline_id, first[0].pipeline_version_id, first[0].display_name
    v = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id, description=description)
    return pipeline_id, v.pipeline_version_id, version_name


def submit(
    host: str | None,
    profile: str = "paper",
    overrides: dict | None = None,
    platform: PlatformCfg | None = None,
    values: list[str] | None = None,
    *,
    namespace: str | None = None,
    experiment: str = "cmva",
    run_name: str | None = None,
    pipeline_name: str = "cmva-gs",
    params: dict | None = None,
    service_account: str | None = None,
    enable_caching: bool = True,
    client=None,
    **auth,
) -> Submitted:
    """Compile, upload (pipeline or new version), then start a run of that version in `experiment`.

    `namespace`: the Kubeflow profile namespace (multi-user); `params`: the pipeline's other parameters
    (mic_uri, socialchem_uri, eval_uri, store_uri, channel); `auth`: `kfp_client`'s options.
    """
    from cmva.kfp_pipeline import build_pipeline

    client = client or kfp_client(host, **auth)
    with tempfile.TemporaryDirectory(prefix="cmva-kfp-") as tmp:
        package = compile_pipeline(tmp, platform, values, profile)
        description = build_pipeline(platform, values, profile).description
        pipeline_id, version_id, version_name = upload(client, package, pipeline_name, description, namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    arguments = {"profile": profile, "overrides": overrides or {}, **(params or {})}
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=run_name or f"{pipeline_name} {profile}",
        params=arguments,
        pipeline_id=pipeline_id,
        version_id=version_id,
        enable_caching=enable_caching,
        service_account=service_account,
    )
    log.info("submitted run %s of %s (%s) in experiment %s", run.run_id, pipeline_name, version_name, experiment)
    return Submitted(run.run_id, pipeline_id, version_id, version_name, exp.experiment_id)


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
