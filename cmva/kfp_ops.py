"""What the KFP components call: one function per stage, on artifact directories.

A component is a thin wrapper (components/*.py): it passes its `Input[...]`/`Output[...]` paths here and
logs the returned metrics. Artifacts are directories; each carries the same files as in a local run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def _profile(profile: str, overrides: dict | None, values: list | None = None):
    """The recipe with its overrides; a non-empty `values` (the pipeline's value set) wins."""
    from cmva.config import load_profile

    merged = dict(overrides or {})
    if values:
        merged["values"] = list(values)
    return load_profile(profile, merged)


def _data(uri: str, kind: str) -> Path:
    """'' → the bundled sample; a local path or an s3:// object otherwise."""
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
    from cmva.storage import fetch_file

    if not uri:
        return SAMPLE_MIC if kind == "mic" else SAMPLE_SOCIALCHEM
    return fetch_file(uri, tempfile.mkdtemp(prefix=f"cmva-{kind}-"))


def _values(profile):
    from cmva.values import resolve_values

    return resolve_values(profile.values)


def import_base_op(profile: str, overrides: dict, out: str) -> dict:
    from cmva import stages

    p = _profile(profile, overrides)
    stages.import_base_stage(Path(out), p)
    return json.loads((Path(out) / "cmva_base.json").read_text())


def train_rewards_op(
    profile: str, overrides: dict, values: list, mic_uri: str, socialchem_uri: str, out: str
) -> dict[str, float]:
    """Returns flat metrics: `<value>_accuracy`, `<value>_f1`, `max_pairwise_correlation` (held-out)."""
    from cmva import stages

    p = _profile(profile, overrides, values)
    stages.rewards_stage(Path(out), _data(socialchem_uri, "socialchem"), _data(mic_uri, "mic"), _values(p), p)
    m = json.loads((Path(out) / "metrics.json").read_text())
    flat = {f"{v}_{k}": float(d[k]) for v, d in m.items() if not v.startswith("_") for k in ("accuracy", "f1")}
    flat["max_pairwise_correlation"] = float(m["_pairwise_correlation"]["max_pairwise"])
    return {k: v for k, v in flat.items() if math.isfinite(v)}


def train_agent_op(
    value: str, profile: str, overrides: dict, values: list, mic_uri: str, base: str, rewards: str, out: str
) -> dict[str, float]:
    from cmva import stages

    p = _profile(profile, overrides, values)
    vals = _values(p)
    if value not in [v.name for v in vals]:
        raise ValueError(f"value {value!r} is not in the profile's values {[v.name for v in vals]}")
    stages.agent_stage(Path(out), value, Path(base), Path(rewards), _data(mic_uri, "mic"), vals, p)
    s = json.loads((Path(out) / "summary.json").read_text())
    return {k: float(s[k]) for k in ("reward_first", "reward_last", "kl_last", "steps") if s.get(k) is not None}


def agents_by_value(agent_dirs: Sequence[str]) -> dict[str, Path]:
    """Agent artifacts (e.g. collected from a ParallelFor) keyed by the value in their summary.json."""
    out = {}
    for d in agent_dirs:
        value = json.loads((Path(d) / "summary.json").read_text())["value"]
        out[value] = Path(d)
    return out


def build_aggregator_data_op(
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    base: str,
    agent_dirs: Sequence[str],
    rewards: str,
    out: str,
) -> dict[str, float]:
    from cmva import stages

    p = _profile(profile, overrides, values)
    stages.aggregator_data_stage(
        Path(out), Path(base), agents_by_value(agent_dirs), Path(rewards), _data(mic_uri, "mic"), _values(p), p
    )
    stats = json.loads((Path(out) / "stats.json").read_text())
    keys = ("rows", "questions_with_2plus_targets", "rows_showing_all_agents", "graded_rows_target_top_weight")
    return {k: float(stats[k]) for k in keys if stats.get(k) is not None}


def train_aggregator_op(profile: str, overrides: dict, base: str, data: str, out: str) -> dict[str, float]:
    from cmva import stages

    p = _profile(profile, overrides)
    stages.aggregator_stage(Path(out), Path(base), Path(data), p)
    s = json.loads((Path(out) / "summary.json").read_text())
    return {k: float(s[k]) for k in ("loss_first", "loss_last", "steps") if s.get(k) is not None}


def artifacts_view(base: str, rewards: str, agent_dirs: Sequence[str], aggregator: str) -> Path:
    """A run-directory layout (base/, rewards/, agents/<v>/, aggregator/) of symlinks to KFP artifacts."""
    root = Path(tempfile.mkdtemp(prefix="cmva-artifacts-"))
    (root / "agents").mkdir()
    (root / "base").symlink_to(Path(base).resolve())
    (root / "rewards").symlink_to(Path(rewards).resolve())
    (root / "aggregator").symlink_to(Path(aggregator).resolve())
    for v, d in agents_by_value(agent_dirs).items():
        (root / "agents" / v).symlink_to(d.resolve())
    return root


def evaluate_op(
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    eval_uri: str,
    base: str,
    rewards: str,
    agent_dirs: Sequence[str],
    aggregator: str,
    out: str,
) -> tuple[dict[str, float], str, str]:
    """Returns (flat metrics, report Markdown, report HTML with the plots inlined)."""
    from cmva import stages

    p = _profile(profile, overrides, values)
    art = artifacts_view(base, rewards, agent_dirs, aggregator)
    report = stages.evaluate_stage(
        Path(out), art, _data(mic_uri, "mic"), _values(p), p, _data(eval_uri, "mic") if eval_uri else None
    )
    metrics = {f"rougeL_{s}": r["rougeL"] for s, r in report["rouge"].items()}
    metrics.update({f"conformity_delta_{v}": c["delta"] for v, c in report["conformity"].items()})
    for system, sens in report["sensitivity"].items():
        key = "sensitivity_" + system.replace("-", "_")
        metrics[key], metrics[f"{key}_n"] = sens["mean_spearman"], sens["n"]
    metrics["specialisation_mean"] = report["specialisation"]["mean_off_diagonal"]
    metrics["reward_correlation_max"] = report["reward_correlation"]["max_pairwise"]
    for system, d in report["paired"].items():
        metrics["paired_win_rate_" + system.replace("-", "_")] = d["win_rate"]
    md = (Path(out) / "report.md").read_text()
    # KFP metrics cannot hold NaN (e.g. a Spearman undefined on every answer): such a metric is left out, and
    # its `_n` companion (0) says why; report.json keeps every value.
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}, md, report_html(md, Path(out))


def report_html(markdown: str, out: Path) -> str:
    """The report as one HTML page with the PNG plots inlined (the KFP dashboard shows HTML artifacts)."""
    import base64
    import html
    import re

    body = []
    for line in markdown.splitlines():
        m = re.fullmatch(r"!\[(.*)\]\((.*\.png)\)", line.strip())
        if m and (out / m.group(2)).is_file():
            data = base64.b64encode((out / m.group(2)).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"/>')
        else:
            body.append(html.escape(line))
    return "<html><body><pre>" + "\n".join(body) + "</pre></body></html>"


def publish_op(
    store_uri: str, version: str, base: str, rewards: str, agent_dirs: Sequence[str], aggregator: str
) -> str:
    """Publish the serving artifacts under `<store_uri>/<version>/` (what InferenceServices point at)."""
    from cmva.storage import open_store

    if not version:
        raise ValueError("publish needs a version (e.g. the pipeline run id) so InferenceServices can pin it")
    store = open_store(f"{store_uri.rstrip('/')}/{version}")
    store.publish(Path(base), "base", overwrite=True)
    store.publish(Path(rewards), "rewards", overwrite=True)
    for v, d in agents_by_value(agent_dirs).items():
        store.publish(d, f"agents/{v}", overwrite=True)
    store.publish(Path(aggregator), "aggregator", overwrite=True)
    return store.uri


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a scratch directory that becomes `path` only when the block succeeds.

    A component killed mid-stage leaves no half-written artifact at its output path (KFP then records
    no output and no cache entry, so a rerun recomputes exactly that stage).
    """
    import os
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".partial-{final.name}-", dir=final.parent))
    try:
        yield str(scratch)
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def log_metrics(artifact, values: dict[str, float]) -> None:
    """Log metrics on a KFP `Metrics` artifact and also write them to its file.

    kfp.local treats a cache entry whose artifact file is missing as a miss; `log_metric` alone writes no
    file, so without this a stage with metrics would be recomputed on every rerun.
    """
    for k, v in values.items():
        artifact.log_metric(k, v)
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2))
