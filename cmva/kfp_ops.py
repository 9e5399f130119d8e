"""What the KFP components call: any stage of `cmva.stages` on artifact directories (`run_component`,
`run_trainjob_component`), and the platform steps (collect, gate, publish, promote).

Artifacts are directories; each carries the same files as in a local run.
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


def _data(uri: str, kind: str, tmp: str) -> Path | None:
    """'' → the bundled sample (eval: None, the test split); a local path, or an s3:// object downloaded into `tmp`."""
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
    from cmva.storage import fetch_file

    if not uri:
        return {"mic": SAMPLE_MIC, "socialchem": SAMPLE_SOCIALCHEM}.get(kind)
    return fetch_file(uri, Path(tmp) / kind)


def _values(profile):
    from cmva.values import resolve_values

    return resolve_values(profile.values)


def _finite(metrics: dict) -> dict[str, float]:
    """The metrics KFP can hold, as floats: KFP metrics cannot hold NaN (e.g. a Spearman undefined on every
    answer), so such a metric is left out, and its `_n` companion (0) says why; the stage's own files keep it."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def run_stage(
    name: str,
    out: str,
    inputs: dict[str, str],
    profile: str,
    overrides: dict,
    values: list,
    value: str | None = None,
    nproc: int = 1,
    **data_uris: str,
) -> dict[str, float]:
    """Stage `name` (cmva.stages) on KFP artifact directories; returns its metrics.

    Args:
        inputs: Input name → directory ("agents": a `collect-agents` output or one agent's directory).
        data_uris: `<file>_uri` for each data file the stage reads ('' → the bundled sample; eval: the test split).
        nproc: Processes training data-parallel (torchrun, one per GPU of the pod), for distributed stages.
    """
    from cmva.stages import StageCall, stage

    st = stage(name)
    p = _profile(profile, overrides, values)
    dirs = {k: agents_by_value([d]) if k == "agents" else Path(d) for k, d in inputs.items()}
    with tempfile.TemporaryDirectory(prefix="cmva-data-") as tmp:  # downloaded data files live as long as the stage
        data = {d: _data(data_uris.get(f"{d}_uri", ""), d, tmp) for d in st.data}
        st.run(Path(out), StageCall(p, _values(p), data, dirs, value, nproc))
    return _finite(st.summary(Path(out)) if st.summary else {})


def _stage_params(st, args: dict) -> dict:
    """The stage's parameters (not artifacts) out of a component's arguments."""
    keys = ["profile", "overrides", "values", *(f"{d}_uri" for d in st.data)]
    keys += ["value"] if st.per_value else []
    return {k: args[k] for k in keys}


def _finish(st, args: dict, metrics: dict[str, float]) -> None:
    """Metadata, metrics and reports of a finished stage component."""
    output = args[st.output]
    if st.metadata:
        output.metadata.update(st.metadata(Path(output.path)))
    if st.per_value:
        output.metadata["value"] = args["value"]
    if st.summary:
        log_metrics(args["metrics"], metrics)
    if st.reports:
        md = inline_images((Path(output.path) / "report.md").read_text(), Path(output.path))
        Path(args["report_md"].path).write_text(md)
        Path(args["report_html"].path).write_text(report_html(md, Path(output.path)))


def run_component(name: str, args: dict) -> None:
    """The body of stage `name`'s KFP component (cmva.kfp_components): `args` are its arguments (KFP artifacts)."""
    from cmva.stages import stage

    st = stage(name)
    inputs = {i: args[i].path for i in st.inputs}
    with atomic_dir(args[st.output].path) as out:
        metrics = run_stage(name, out, inputs, **_stage_params(st, args), nproc=args.get("nproc", 1))
    _finish(st, args, metrics)


def run_trainjob_component(name: str, args: dict) -> None:
    """The body of stage `name`'s TrainJob launcher component: the stage runs on the nodes of a Kubeflow Trainer
    TrainJob (`args["launch"]`, cmva.trainjob); artifacts travel as (URI, path)."""
    from cmva.stages import stage
    from cmva.trainjob import launch_stage

    st = stage(name)
    inputs = {i: (args[i].uri, args[i].path) for i in st.inputs}
    with atomic_dir(args[st.output].path) as out:
        launch_stage(name, _stage_params(st, args), inputs, args["launch"], args["run_id"], out)
        metrics = st.summary(Path(out)) if st.summary else {}
    _finish(st, args, _finite(metrics))


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
