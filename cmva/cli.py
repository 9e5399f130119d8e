"""`cmva`: one subcommand per stage, plus `run` (the whole pipeline).

$ cmva import-base --out runs/cpu/base
$ cmva check-data
$ cmva run --profile smoke --out runs/smoke
"""

from __future__ import annotations

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


@app.command("import-base")
def import_base_cmd(
    out: Annotated[Path, typer.Option(help="directory for the safetensors checkpoint")],
    source: Annotated[
        str | None, typer.Option(help="a .gguf file, a Hugging Face directory or an s3:// URI (default: SmolLM2)")
    ] = None,
    tiny: Annotated[bool, typer.Option(help="write a tiny random model (tests, smoke profile) instead")] = False,
) -> None:
    """Import a base model into a plain safetensors checkpoint (GGUF-loaded models refuse training)."""
    from cmva.models import import_base, tiny_model

    path = tiny_model(out) if tiny else import_base(out, source)
    typer.echo(f"base model checkpoint: {path}")


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
MicOpt = Annotated[Path | None, typer.Option(help="MIC-schema CSV for training (default: bundled sample)")]
ScOpt = Annotated[Path | None, typer.Option(help="SocialChem-schema TSV (default: bundled sample)")]


def _overrides(sets: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in sets or []:
        key, sep, val = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(val)
    return out


def _open_run(artifacts: Path, profile: str, sets, mic, socialchem):
    """Open (or create) a run directory; an existing run keeps its recorded profile and data."""
    import json

    from cmva.config import Profile, load_profile
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
    from cmva.pipeline import RUN_FILE, Run

    run_file = artifacts / RUN_FILE
    if run_file.is_file() and not sets and mic is None and socialchem is None:
        info = json.loads(run_file.read_text())
        return Run(artifacts, Profile.model_validate(info["profile"]), info["mic"], info["socialchem"])
    prof = load_profile(profile, _overrides(sets))
    return Run(artifacts, prof, mic or SAMPLE_MIC, socialchem or SAMPLE_SOCIALCHEM)


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2) from None


@app.command("train-rewards")
def train_rewards_cmd(
    artifacts: ArtifactsOpt,
    profile: ProfileOpt = "cpu",
    set_: SetOpt = None,
    mic: MicOpt = None,
    socialchem: ScOpt = None,
) -> None:
    """Train the reward classifiers (all-MiniLM-L6-v2 fine-tuned, one head per value); writes held-out metrics."""
    from cmva import stages

    run = _open_run(artifacts, profile, set_, mic, socialchem)
    path = run.stage("rewards", lambda d: stages.rewards_stage(d, run.socialchem, run.mic, run.values, run.profile))
    typer.echo((path / "metrics.json").read_text())


@app.command("train-agent")
def train_agent_cmd(
    value: Annotated[str, typer.Option(help="the moral value of this agent")],
    artifacts: ArtifactsOpt,
    profile: ProfileOpt = "cpu",
    set_: SetOpt = None,
    mic: MicOpt = None,
    socialchem: ScOpt = None,
) -> None:
    """RL-fine-tune one moral agent (TRL RLOO + LoRA, KL penalty to the PT model)."""
    from cmva import stages

    run = _open_run(artifacts, profile, set_, mic, socialchem)
    if value not in [v.name for v in run.values]:
        _fail(ValueError(f"value {value!r} is not in this run's values {[v.name for v in run.values]}"))
    base = run.stage("base", lambda d: stages.import_base_stage(d, run.profile))
    rewards = run.store.get("rewards")
    path = run.stage(
        f"agents/{value}", lambda d: stages.agent_stage(d, value, base, rewards, run.mic, run.values, run.profile)
    )
    typer.echo(f"agent adapter: {path}")


@app.command("build-aggregator-data")
def build_aggregator_data_cmd(artifacts: ArtifactsOpt, profile: ProfileOpt = "cpu", set_: SetOpt = None) -> None:
    """Every agent's answer per MIC training question; rows under several profiles with c·r(y)-best targets."""
    from cmva import stages

    run = _open_run(artifacts, profile, set_, None, None)
    agents = {v.name: run.store.get(f"agents/{v.name}") for v in run.values}
    path = run.stage(
        "aggregator-data",
        lambda d: stages.aggregator_data_stage(
            d, run.store.get("base"), agents, run.store.get("rewards"), run.mic, run.values, run.profile
        ),
    )
    typer.echo(f"aggregator data: {path}")


@app.command("train-aggregator")
def train_aggregator_cmd(artifacts: ArtifactsOpt, profile: ProfileOpt = "cpu", set_: SetOpt = None) -> None:
    """LoRA SFT of the contextual aggregator (TRL SFTTrainer, loss on the answer tokens)."""
    from cmva import stages

    run = _open_run(artifacts, profile, set_, None, None)
    path = run.stage(
        "aggregator",
        lambda d: stages.aggregator_stage(d, run.store.get("base"), run.store.get("aggregator-data"), run.profile),
    )
    typer.echo(f"aggregator adapter: {path}")


@app.command("evaluate")
def evaluate_cmd(
    artifacts: ArtifactsOpt,
    out: Annotated[Path, typer.Option(help="directory for generations.jsonl, report.json, report.md and plots")],
    data: Annotated[Path | None, typer.Option(help="any MIC-schema CSV (default: the run's test split)")] = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate CMVA-GS against the baselines: ROUGE, agent conformity, profile sensitivity."""
    from cmva import stages
    from cmva.data import DataError

    run = _open_run(artifacts, "cpu", None, None, None)
    if set_:
        run.profile = run.profile.model_copy(
            update={
                "evaluate": run.profile.evaluate.model_copy(
                    update={k.removeprefix("evaluate."): v for k, v in _overrides(set_).items()}
                )
            }
        )
    try:
        stages.evaluate_stage(out, run.root, run.mic, run.values, run.profile, data)
    except DataError as e:
        _fail(e)
    typer.echo(f"report: {out / 'report.md'}")


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
) -> None:
    """Start the serving chain as real KServe model servers on loopback; Ctrl-C stops all of it."""
    import time

    from cmva.serving.launcher import ask as ask_chain
    from cmva.serving.launcher import format_answer, start_chain

    chain = start_chain(artifacts, topology, port, values.split(",") if values else None)
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


@app.command("manifests")
def manifests_cmd(overlay: Annotated[str, typer.Option(help="separate | packed | gpu")] = "packed") -> None:
    """Print the rendered Kubernetes manifests of an overlay (kustomize build equivalent)."""
    from cmva.manifests import render

    typer.echo(render(overlay))


pipeline_app = typer.Typer(no_args_is_help=True, help="The KFP pipeline: compile, run locally, submit to Kubeflow.")
app.add_typer(pipeline_app, name="pipeline")
PlatformOpt = Annotated[Path | None, typer.Option(help="YAML with Kubernetes settings (image, GPU, node pool, Secret)")]


@pipeline_app.command("compile")
def pipeline_compile_cmd(
    out: Annotated[Path, typer.Option(help="directory for the IR YAML")], platform: PlatformOpt = None
) -> None:
    """Write the pipeline's IR YAML, to upload in the Kubeflow dashboard."""
    from cmva.kfp_runner import compile_pipeline, platform_from_env

    typer.echo(f"pipeline: {compile_pipeline(out, platform_from_env(platform))}")


@pipeline_app.command("run")
def pipeline_run_cmd(
    local: Annotated[
        bool, typer.Option("--local", help="run under kfp.local (the only mode here; use submit for a cluster)")
    ] = False,
    profile: ProfileOpt = "cpu",
    set_: SetOpt = None,
    values: ValuesOpt = None,
    root: Annotated[Path, typer.Option(help="local pipeline root (outputs + cache)")] = Path("runs/kfp"),
    ask: Annotated[str | None, typer.Option(help="then serve the published artifacts (packed) and ask this")] = None,
    port: Annotated[int, typer.Option(help="port of the serving chain for --ask")] = 8080,
) -> None:
    """Run the same DAG locally with kfp.local.SubprocessRunner; finished tasks are cached."""
    from cmva.kfp_runner import latest_serving_dir, run_local, summarize_report

    if not local:
        _fail(ValueError("pass --local to run here, or use `cmva pipeline submit --host URL` for a Kubeflow cluster"))
    report = run_local(root / profile, profile, _overrides(set_), values.split(",") if values else None)
    typer.echo((report / "report.md").read_text())
    typer.echo(f"ROUGE-L: {summarize_report(report)}")
    typer.echo(f"report: {report / 'report.md'}")
    if ask:
        from cmva.serving.launcher import ask as ask_chain
        from cmva.serving.launcher import format_answer, start_chain

        serving = latest_serving_dir(root / profile)
        profile_c = {"care": 1.0, "fairness": 0.5}
        with start_chain(str(serving), "packed", port) as chain:
            typer.echo(f"\nserving chain (packed) on {chain.url}, artifacts {serving}:")
            typer.echo(format_answer(ask, profile_c, ask_chain(chain, ask, profile_c)))


@pipeline_app.command("submit")
def pipeline_submit_cmd(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API URL")],
    profile: ProfileOpt = "paper",
    set_: SetOpt = None,
    platform: PlatformOpt = None,
) -> None:
    """Submit a run to a Kubeflow cluster (kfp.Client)."""
    from cmva.kfp_runner import platform_from_env, submit

    typer.echo(f"run id: {submit(host, profile, _overrides(set_), platform_from_env(platform))}")


if __name__ == "__main__":
    app()
