"""`cmva`: one subcommand per stage (derived from cmva.stages), plus `run` (the whole pipeline).

$ cmva check-data
$ cmva import-base --artifacts runs/cpu && cmva train-rewards --artifacts runs/cpu && …
$ cmva run --profile smoke --out runs/smoke
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ValuesOpt = Annotated[
    str | None, typer.Option(help="comma-separated moral values (default: care,fairness,loyalty,authority,sanctity)")
]


def _values(values: str | None):
    from cmva.values import resolve_values

    return resolve_values(values.split(",") if values else None)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command("check-data")
def check_data_cmd(
    mic: Annotated[Path | None, typer.Option(help="MIC-schema CSV (default: bundled sample)")] = None,
    socialchem: Annotated[Path | None, typer.Option(help="SocialChem-schema TSV (default: bundled sample)")] = None,
    values: ValuesOpt = None,
) -> None:
    """Validate the data files and print what would be used per value and split."""
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM, DataError, load_mic, load_socialchem

    vals = _values(values)
    try:
        mic_ds, mic_rep = load_mic(mic or SAMPLE_MIC, vals)
        sc_ds, sc_rep = load_socialchem(socialchem or SAMPLE_SOCIALCHEM)
    except DataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(mic_rep.summary())
    typer.echo(sc_rep.summary())
    for v in vals:
        mic_n = sum(v.name in m for m in mic_ds["moral"])
        rows = [lab for lab, f in zip(sc_ds["label"], sc_ds["foundations"], strict=True) if v.name in f]
        neg = rows.count(0)
        typer.echo(
            f"{v.name:10s} MIC rows {mic_n:4d} | SocialChem rows {len(rows):5d} ({neg} negative, {len(rows) - neg} positive)"
        )
    splits = {s: mic_ds["split"].count(s) for s in sorted(set(mic_ds["split"]))}
    typer.echo(f"MIC splits: {splits}; aggregator targets: {sum(bool(t) for t in mic_ds['target'])}")


ArtifactsOpt = Annotated[
    Path, typer.Option(help="run directory holding the stage artifacts (created by the first stage)")
]
ProfileOpt = Annotated[str, typer.Option(help="run profile: smoke | cpu | paper | path/to/recipe.yaml")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a recipe value, e.g. --set agent.max_steps=10")
]
NprocOpt = Annotated[
    int,
    typer.Option(
        min=1, help="processes training data-parallel (torchrun; one per GPU, gloo on CPU), same global batch"
    ),
]
MicOpt = Annotated[Path | None, typer.Option(help="MIC-schema CSV for training (default: bundled sample)")]
DataOpt = Annotated[Path | None, typer.Option(help="any MIC-schema CSV to evaluate on (default: the run's test split)")]
OutOpt = Annotated[
    Path | None, typer.Option(help="write the output here instead of into the run directory (then nothing is reused)")
]
ScOpt = Annotated[Path | None, typer.Option(help="SocialChem-schema TSV (default: bundled sample)")]


def _overrides(sets: list[str] | None) -> dict:
    from cmva.config import parse_sets

    try:
        return parse_sets(sets)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def _open_run(artifacts: Path, profile: str, sets, mic, socialchem, keep: bool = False):
    """Open (or create) a run directory; an existing run keeps its recorded profile and data.

    keep: the output goes elsewhere (`--out`), so `--set` applies to this command only, not to the run.
    """
    import json

    from pydantic import ValidationError

    from cmva.config import Profile, load_profile, with_overrides
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
    from cmva.pipeline import RUN_FILE, Run

    run_file = artifacts / RUN_FILE
    if run_file.is_file() and (keep or not sets) and mic is None and socialchem is None:
        info = json.loads(run_file.read_text())
        try:
            prof = Profile.model_validate(info["profile"])
        except ValidationError as e:
            raise ValueError(
                f"{run_file} records settings this cmva version does not know ({e.error_count()} problems, first: "
                f"{e.errors()[0]['loc']} {e.errors()[0]['msg']}): run the stages into a new --artifacts directory"
            ) from None
        run = Run(artifacts, prof, info["mic"], info["socialchem"], record=not keep)
        run.profile = with_overrides(run.profile, _overrides(sets)) if sets else run.profile
        return run
    prof = load_profile(profile, _overrides(sets))
    return Run(artifacts, prof, mic or SAMPLE_MIC, socialchem or SAMPLE_SOCIALCHEM, record=not keep)


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2) from None


def _run_stage(
    st,
    artifacts: Path,
    profile: str = "cpu",
    set_: list[str] | None = None,
    mic: Path | None = None,
    socialchem: Path | None = None,
    data: Path | None = None,
    value: str | None = None,
    nproc: int = 1,
    out: Path | None = None,
) -> None:
    """Stage `st` into the run directory `artifacts` (reused when there), or into `out` (never reused)."""
    import json

    from cmva.atomic import atomic_dir
    from cmva.data import DataError

    try:
        if data is not None and out is None:
            raise ValueError("--data evaluates on another file: pass --out too (the run's own eval/ keeps its split)")
        run = _open_run(artifacts, profile, set_, mic, socialchem, keep=out is not None)
        if st.per_value and value not in [v.name for v in run.values]:
            raise ValueError(f"value {value!r} is not in this run's values {[v.name for v in run.values]}")
        if out is None:
            path = run.run_stage(st, value, nproc)
        else:
            with atomic_dir(out, exist="replace") as scratch:
                st.run(Path(scratch), run.call(st, value, nproc, data))
            path = out
    except (ValueError, DataError) as e:
        _fail(e)
    if st.summary:
        typer.echo(json.dumps(st.summary(path), indent=2))
    typer.echo(f"{st.name}: {path}")


def _option(name: str, annotation, default=inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _stage_parameters(st) -> list[inspect.Parameter]:
    """The options of stage `st`'s subcommand, from its declaration (per value, data files, distributed)."""
    params = [_option("artifacts", ArtifactsOpt)]
    if st.per_value:
        params.append(_option("value", Annotated[str, typer.Option(help="the moral value of this run of the stage")]))
    params += [_option("profile", ProfileOpt, "cpu"), _option("set_", SetOpt, None)]
    params += [_option("mic", MicOpt, None)] if "mic" in st.data else []
    params += [_option("socialchem", ScOpt, None)] if "socialchem" in st.data else []
    params += [_option("data", DataOpt, None)] if "eval" in st.data else []
    params += [_option("nproc", NprocOpt, 1)] if st.distributed else []
    return [*params, _option("out", OutOpt, None)]


def _stage_command(st):
    """The `cmva <stage>` subcommand of declaration `st` (cmva.stages)."""

    def command(**kwargs) -> None:
        _run_stage(st, **kwargs)

    params = _stage_parameters(st)
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = st.doc
    return command


def _add_stage_commands() -> None:
    from cmva.stages import STAGES

    for st in STAGES:
        app.command(st.name)(_stage_command(st))


_add_stage_commands()


@app.command("run")
def run_cmd(
    out: Annotated[Path, typer.Option(help="run directory (finished stages in it are reused)")],
    profile: ProfileOpt = "cpu",
    set_: SetOpt = None,
    mic: MicOpt = None,
    socialchem: ScOpt = None,
) -> None:
    """Run the whole pipeline (base → rewards → agents → aggregator data → aggregator → evaluation)."""
    from cmva.config import load_profile
    from cmva.pipeline import run_pipeline

    try:
        prof = load_profile(profile, _overrides(set_))
        result = run_pipeline(prof, out, mic, socialchem)
    except ValueError as e:
        _fail(e)
    typer.echo(Path(result["report_md"]).read_text())
    typer.echo(f"total wall time: {result['total_s']} s")
    typer.echo(f"report: {result['report_md']}")


@app.command("serve")
def serve_cmd(
    artifacts: Annotated[
        str, typer.Option(help="run directory or s3:// prefix with base/, rewards/, agents/, aggregator/")
    ],
    topology: Annotated[
        str, typer.Option(help="packed (one predictor, all adapters) | separate (one per agent)")
    ] = "packed",
    port: Annotated[int, typer.Option(help="transformer port; predictors take the next ones")] = 8080,
    values: ValuesOpt = None,
    ask: Annotated[str | None, typer.Option(help="send one question through the chain, print the answer, stop")] = None,
    host: Annotated[str, typer.Option(help="address every server binds (0.0.0.0: all interfaces)")] = "127.0.0.1",
    dtype: Annotated[
        str | None,
        typer.Option(
            help="float32 | bfloat16 | float16-weights: the predictors' base model (bf16: CPUs with native bf16, "
            "GPUs; float16-weights: CPUs, float16 linear weights); default: the base's own on a CPU (as evaluated), "
            "else float32"
        ),
    ] = None,
) -> None:
    """Start the serving chain as real KServe model servers on loopback; Ctrl-C or SIGTERM stops all of it."""
    import time

    from cmva.models import generation_dtype
    from cmva.serving.launcher import ask as ask_chain
    from cmva.serving.launcher import format_answer, start_chain, stop_on_sigterm

    stop_on_sigterm()
    values_list = values.split(",") if values else None
    try:
        chain = start_chain(artifacts, topology, port, values_list, host=host, dtype=dtype and generation_dtype(dtype))
    except ValueError as e:
        _fail(e)
    with chain:
        typer.echo(
            f"cmva ({topology}) ready: POST {chain.url}/v1/models/cmva:predict | {chain.url}/openai/v1/chat/completions"
        )
        if ask:
            profile = {v: 1.0 for v in (values.split(",") if values else ["care", "fairness"])}
            typer.echo(format_answer(ask, profile, ask_chain(chain, ask, profile)))
            return
        try:
            while all(p.poll() is None for p in chain.processes.values()):
                time.sleep(1)
            typer.echo("a server exited; stopping the chain", err=True)
        except KeyboardInterrupt:
            typer.echo("stopping")


StoreOpt = Annotated[
    str,
    typer.Option(
        envvar="CMVA_STORE", help="where runs are published (<store>/<run id>/) and channels live (<store>/channels/)"
    ),
]


@app.command("promote")
def promote_cmd(
    run_id: Annotated[str, typer.Option(help="the published run (the pipeline run id) to serve")],
    channel: Annotated[str, typer.Option(help="serving channel, e.g. prod or staging")],
    store: StoreOpt = "s3://cmva/serving",
) -> None:
    """Make a serving channel serve one published run's artifacts; rollback = promote the older run.

    The InferenceServices of the channel read `<store>/channels/<channel>` at start: restart them to pick it up.
    """
    from cmva.channels import channel_uri, promote
    from cmva.storage import StorageError

    try:
        record = promote(store, run_id, channel)
    except (StorageError, ValueError) as e:
        _fail(e)
    typer.echo(f"channel {channel} ({channel_uri(store, channel)}) serves run {record['run_id']}")
    typer.echo(f"previous run: {record['previous_run_id'] or '(none)'}")


pipeline_app = typer.Typer(no_args_is_help=True, help="The KFP pipeline: compile, run locally, submit to Kubeflow.")
app.add_typer(pipeline_app, name="pipeline")
PlatformOpt = Annotated[
    Path | None, typer.Option(help="YAML with Kubernetes settings (cmva.config.PlatformCfg: image, resources, GPU…)")
]
DigestOpt = Annotated[
    str | None, typer.Option(help="pin the train image by digest (sha256:…): KFP caches tasks by the image string")
]
ChannelOpt = Annotated[str, typer.Option(help="channel to promote to when the quality gate passes; '': publish only")]


def _platform(platform: Path | None, image_digest: str | None):
    from cmva.kfp_runner import platform_from_env

    p = platform_from_env(platform)
    return type(p).model_validate({**p.model_dump(), "image_digest": image_digest}) if image_digest else p


@pipeline_app.command("compile")
def pipeline_compile_cmd(
    out: Annotated[Path, typer.Option(help="directory for the IR YAML")],
    platform: PlatformOpt = None,
    profile: Annotated[
        str, typer.Option(help="default of the pipeline's profile parameter; smoke and cpu request no GPU")
    ] = "paper",
    values: ValuesOpt = None,
    image_digest: DigestOpt = None,
) -> None:
    """Write the pipeline's IR YAML (`submit` uploads it; it can also be uploaded in the dashboard)."""
    from cmva.kfp_runner import compile_pipeline

    path = compile_pipeline(out, _platform(platform, image_digest), values.split(",") if values else None, profile)
    typer.echo(f"pipeline: {path}")


@pipeline_app.command("run")
def pipeline_run_cmd(
    local: Annotated[
        bool, typer.Option("--local", help="run under kfp.local (the only mode here; use submit for a cluster)")
    ] = False,
    profile: ProfileOpt = "cpu",
    set_: SetOpt = None,
    values: ValuesOpt = None,
    root: Annotated[Path, typer.Option(help="local pipeline root (outputs + cache)")] = Path("runs/kfp"),
    ask: Annotated[str | None, typer.Option(help="then serve the promoted channel (packed) and ask this")] = None,
    port: Annotated[int, typer.Option(help="port of the serving chain for --ask")] = 8080,
    channel: ChannelOpt = "staging",
) -> None:
    """Run the same DAG locally with kfp.local.SubprocessRunner; finished tasks are cached."""
    from cmva.channels import channel_uri, read_release
    from cmva.kfp_runner import gate_verdict, latest_serving_dir, run_local, summarize_report

    if not local:
        _fail(ValueError("pass --local to run here, or use `cmva pipeline submit --host URL` for a Kubeflow cluster"))
    vals = values.split(",") if values else None
    report = run_local(root / profile, profile, _overrides(set_), vals, channel=channel)
    typer.echo((report / "report.md").read_text())
    typer.echo(gate_verdict(report))
    typer.echo(f"ROUGE-L: {summarize_report(report)}")
    typer.echo(f"report: {report / 'report.md'}")
    channel_dir = channel_uri(root.resolve() / profile / "serving", channel) if channel else None
    release = read_release(channel_dir) if channel_dir else None
    if release:
        typer.echo(f"channel {channel} ({channel_dir}) serves run {release['run_id']}")
    if ask:
        from cmva.serving.launcher import ask as ask_chain
        from cmva.serving.launcher import format_answer, start_chain, stop_on_sigterm

        stop_on_sigterm()
        serving = channel_dir if release else latest_serving_dir(root / profile)
        profile_c = {"care": 1.0, "fairness": 0.5}
        with start_chain(str(serving), "packed", port) as chain:
            typer.echo(f"\nserving chain (packed) on {chain.url}, artifacts {serving}:")
            typer.echo(format_answer(ask, profile_c, ask_chain(chain, ask, profile_c)))


@pipeline_app.command("submit")
def pipeline_submit_cmd(
    host: Annotated[
        str | None, typer.Option(envvar="KF_PIPELINES_ENDPOINT", help="Kubeflow Pipelines API URL (…/pipeline)")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Kubeflow profile namespace (multi-user): experiment, run and pipeline go there")
    ] = None,
    experiment: Annotated[str, typer.Option(help="experiment the run is filed under (created if absent)")] = "cmva",
    run_name: Annotated[str | None, typer.Option(help="run name shown in the dashboard")] = None,
    token: Annotated[
        str | None, typer.Option(envvar="CMVA_KFP_TOKEN", help="bearer token (kfp.Client existing_token)")
    ] = None,
    sa_token_path: Annotated[
        str | None, typer.Option(help="projected service-account token file, inside a cluster (kfp credentials)")
    ] = None,
    cookies: Annotated[
        str | None, typer.Option(help="session cookie of the dashboard login, e.g. authservice_session=…")
    ] = None,
    ssl_ca_cert: Annotated[str | None, typer.Option(help="CA bundle of the Kubeflow endpoint")] = None,
    profile: ProfileOpt = "paper",
    set_: SetOpt = None,
    values: ValuesOpt = None,
    mic_uri: Annotated[str, typer.Option(help="MIC-schema CSV (s3://bucket/key); '': the bundled sample")] = "",
    socialchem_uri: Annotated[str, typer.Option(help="SocialChem TSV (s3://bucket/key); '': the bundled sample")] = "",
    eval_uri: Annotated[str, typer.Option(help="MIC-schema CSV to evaluate on; '': the test split")] = "",
    store_uri: Annotated[str, typer.Option(help="where runs are published and channels live")] = "s3://cmva/serving",
    channel: ChannelOpt = "staging",
    platform: PlatformOpt = None,
    image_digest: DigestOpt = None,
    service_account: Annotated[str | None, typer.Option(help="Kubernetes service account of the run's pods")] = None,
    pipeline_name: Annotated[str, typer.Option(help="name in the dashboard's Pipelines list")] = "cmva-gs",
    cache: Annotated[bool, typer.Option(help="reuse cached task results")] = True,
) -> None:
    """Upload the pipeline (or a new version of it) and start a run on a Kubeflow cluster (kfp.Client)."""
    from cmva.kfp_runner import submit

    params = dict(
        mic_uri=mic_uri, socialchem_uri=socialchem_uri, eval_uri=eval_uri, store_uri=store_uri, channel=channel
    )
    try:
        done = submit(
            host,
            profile,
            _overrides(set_),
            _platform(platform, image_digest),
            values.split(",") if values else None,
            namespace=namespace,
            experiment=experiment,
            run_name=run_name,
            pipeline_name=pipeline_name,
            params=params,
            service_account=service_account,
            enable_caching=cache,
            token=token,
            sa_token_path=sa_token_path,
            cookies=cookies,
            ssl_ca_cert=ssl_ca_cert,
        )
    except ValueError as e:
        _fail(e)
    typer.echo(f"pipeline {pipeline_name}: id {done.pipeline_id}, version {done.version_name} ({done.version_id})")
    typer.echo(f"run id: {done.run_id}")


if __name__ == "__main__":
    app()
