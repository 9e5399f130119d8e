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
    value: str,
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    base: str,
    rewards: str,
    out: str,
    nproc: int = 1,
) -> dict[str, float]:
    """`nproc` > 1: data-parallel in that many processes (torchrun, one per GPU of the pod)."""
    from cmva import stages

    p = _profile(profile, overrides, values)
    vals = _values(p)
    if value not in [v.name for v in vals]:
        raise ValueError(f"value {value!r} is not in the profile's values {[v.name for v in vals]}")
    stages.agent_stage(Path(out), value, Path(base), Path(rewards), _data(mic_uri, "mic"), vals, p, nproc)
    return _summary_metrics(out, ("reward_first", "reward_last", "kl_last", "steps"))


def _summary_metrics(out: str, keys: Sequence[str]) -> dict[str, float]:
    """The given keys of `<out>/summary.json` that are set, as floats (a training stage's KFP metrics)."""
    s = json.loads((Path(out) / "summary.json").read_text())
    return {k: float(s[k]) for k in keys if s.get(k) is not None}


def train_agent_trainjob_op(
    value: str,
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    base: tuple[str, str],
    rewards: tuple[str, str],
    launch: dict,
    run_id: str,
    out: str,
) -> dict[str, float]:
    """`train_agent_op` on the nodes of a Kubeflow Trainer TrainJob (cmva.trainjob); artifacts are (URI, path)."""
    from cmva.trainjob import launch_stage

    kwargs = dict(value=value, profile=profile, overrides=overrides, values=values, mic_uri=mic_uri)
    launch_stage("train-agent", kwargs, {"base": base, "rewards": rewards}, launch, run_id, out)
    return _summary_metrics(out, ("reward_first", "reward_last", "kl_last", "steps"))


def train_aggregator_trainjob_op(
    profile: str, overrides: dict, base: tuple[str, str], data: tuple[str, str], launch: dict, run_id: str, out: str
) -> dict[str, float]:
    """`train_aggregator_op` on the nodes of a Kubeflow Trainer TrainJob (cmva.trainjob)."""
    from cmva.trainjob import launch_stage

    kwargs = dict(profile=profile, overrides=overrides)
    launch_stage("train-aggregator", kwargs, {"base": base, "data": data}, launch, run_id, out)
    return _summary_metrics(out, ("loss_first", "loss_last", "steps"))


def agents_by_value(agent_dirs: Sequence[str]) -> dict[str, Path]:
    """Agent artifacts keyed by the value in their summary.json.

    Each entry is one agent's directory, or a `collect-agents` output holding one subdirectory per agent.
    """
    out = {}
    for d in map(Path, agent_dirs):
        for agent in [d] if (d / "summary.json").is_file() else sorted(p for p in d.iterdir() if p.is_dir()):
            value = json.loads((agent / "summary.json").read_text())["value"]
            if value in out:
                raise ValueError(f"two agent artifacts for value {value!r}: {out[value]} and {agent}")
            out[value] = agent
    return out


def collect_agents_op(agents: dict[str, str | None], out: str) -> dict[str, float]:
    """Copy each trained agent into `<out>/<value>/` (one artifact the later stages take); returns counts."""
    import shutil

    given = {v: Path(d) for v, d in agents.items() if d}
    for value, d in given.items():
        found = json.loads((d / "summary.json").read_text())["value"]
        if found != value:
            raise ValueError(f"the agent passed as {value!r} was trained for {found!r} ({d})")
        shutil.copytree(d, Path(out) / value)
    if not given:
        raise ValueError("collect-agents got no agent")
    return {"agents": float(len(given))}


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


def train_aggregator_op(
    profile: str, overrides: dict, base: str, data: str, out: str, nproc: int = 1
) -> dict[str, float]:
    """`nproc` > 1: data-parallel in that many processes (torchrun, one per GPU of the pod)."""
    from cmva import stages

    p = _profile(profile, overrides)
    stages.aggregator_stage(Path(out), Path(base), Path(data), p, nproc)
    return _summary_metrics(out, ("loss_first", "loss_last", "steps"))


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
    md = inline_images((Path(out) / "report.md").read_text(), Path(out))
    # KFP metrics cannot hold NaN (e.g. a Spearman undefined on every answer): such a metric is left out, and
    # its `_n` companion (0) says why; report.json keeps every value.
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}, md, report_html(md, Path(out))


def _png_data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def inline_images(markdown: str, out: Path) -> str:
    """The Markdown with each `![alt](plot.png)` of `out` as a data: URI (the dashboard has no other copy)."""
    import re

    def repl(m: re.Match) -> str:
        p = out / m.group(2)
        return f"![{m.group(1)}]({_png_data_uri(p)})" if p.is_file() else m.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^()\s]+\.png)\)", repl, markdown)


def report_html(markdown: str, out: Path) -> str:
    """The report as one HTML page with the PNG plots inlined (the KFP dashboard shows HTML artifacts)."""
    import html
    import re

    body = []
    for line in markdown.splitlines():
        m = re.fullmatch(r"!\[(.*)\]\((.*\.png|data:image/png;base64,[A-Za-z0-9+/=]+)\)", line.strip())
        if m and m.group(2).startswith("data:"):
            body.append(f'<img alt="{html.escape(m.group(1))}" src="{m.group(2)}"/>')
        elif m and (out / m.group(2)).is_file():
            body.append(f'<img alt="{html.escape(m.group(1))}" src="{_png_data_uri(out / m.group(2))}"/>')
        else:
            body.append(html.escape(line))
    return "<html><body><pre>" + "\n".join(body) + "</pre></body></html>"


def publish_op(
    store_uri: str, version: str, base: str, rewards: str, agent_dirs: Sequence[str], aggregator: str
) -> str:
    """Publish the serving artifacts under `<store_uri>/<version>/`, then its release record (cmva.channels).

    A channel (`cmva promote`, the pipeline's promote step) then serves a copy of them.
    """
    from cmva.channels import record_run, run_uri
    from cmva.storage import open_store

    if not version:
        raise ValueError("publish needs a version (e.g. the pipeline run id) so a channel can name the run")
    store = open_store(run_uri(store_uri, version))
    manifests = {"base": store.publish(Path(base), "base", overwrite=True)}
    manifests["rewards"] = store.publish(Path(rewards), "rewards", overwrite=True)
    for v, d in agents_by_value(agent_dirs).items():
        manifests[f"agents/{v}"] = store.publish(d, f"agents/{v}", overwrite=True)
    manifests["aggregator"] = store.publish(Path(aggregator), "aggregator", overwrite=True)
    record_run(store_uri, version, manifests)
    return store.uri


def gate_op(profile: str, overrides: dict, report: str) -> tuple[str, dict[str, float], str]:
    """The quality gate on an evaluation report directory: ('pass' | 'fail', metrics, Markdown verdict)."""
    from cmva.gate import check_report

    result = check_report(json.loads((Path(report) / "report.json").read_text()), _profile(profile, overrides).gate)
    log.info("quality gate: %s%s", result.verdict, "" if result.enforced else " (not enforced)")
    return result.verdict, result.metrics(), result.markdown()


def promote_op(store_uri: str, run_id: str, channel: str) -> str:
    """Make `channel` serve run `run_id` (cmva.channels.promote); returns the channel's URI."""
    from cmva.channels import channel_uri, promote

    promote(store_uri, run_id, channel)
    return channel_uri(store_uri, channel)


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a scratch directory that becomes `path` only when the block succeeds.

    A component killed mid-stage leaves no half-written artifact at its output path (KFP then records
    no output and no cache entry, so a rerun recomputes exactly that stage). Leftovers of an earlier
    attempt at `path` are replaced: no reader watches a component's own output.
    """
    from cmva.atomic import atomic_dir as _atomic_dir

    with _atomic_dir(path, exist="replace") as scratch:
        yield str(scratch)


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
