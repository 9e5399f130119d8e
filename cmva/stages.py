"""The pipeline's stages, each declared once: name, inputs, output, data files, resources, whether it runs per value
and whether it can run data-parallel, and the one function that does its work.

Everything else is derived from `STAGES`: the CLI subcommands (`cmva.cli`), the in-process runner
(`cmva.pipeline`), the KFP components (`cmva.kfp_components`) and their wiring (`cmva.kfp_pipeline`), what a
component does with its artifacts (`cmva.kfp_ops.run_stage`) and the TrainJob a multi-node platform creates for a
distributed stage (`cmva.trainjob`). Adding a stage is one `Stage(...)` here and one function.

Inputs name earlier stages' outputs: "base", "rewards", "agents" (the per-value "agent" outputs, collected),
"data" (the aggregator's training data), "aggregator". Data files: "mic", "socialchem" and "eval" (an optional MIC
file to evaluate on instead of the test split).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cmva.config import AgentCfg, Profile, StageResources
from cmva.values import MoralValue

log = logging.getLogger(__name__)


@dataclass
class StageCall:
    """What one run of a stage gets: settings, values, data files, and its inputs' directories.

    `inputs["agents"]` is {value: directory}; `value` is set for per-value stages, `nproc` for distributed ones.
    """

    profile: Profile
    values: list[MoralValue]
    data: dict[str, Path | None]
    inputs: dict
    value: str | None = None
    nproc: int = 1


@dataclass(frozen=True)
class Stage:
    """One stage of CMVA-GS (see the module doc)."""

    name: str  # CLI subcommand, KFP component and task, key of the platform's per-stage resources
    artifact: str  # its directory in a run ("{value}" filled in for per-value stages)
    output: str  # its KFP output artifact, the name later stages' `inputs` use
    run: Callable[[Path, StageCall], None]
    doc: str
    resources: StageResources
    inputs: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    output_type: str = "Model"  # KFP artifact class of the output (kfp.dsl)
    per_value: bool = False  # one run per moral value (`--value`; one KFP task each)
    distributed: bool = False  # can run data-parallel (`--nproc`, N GPUs in a pod, a multi-node TrainJob)
    summary: Callable[[Path], dict] | None = None  # the KFP metrics of a finished output
    metadata: Callable[[Path], dict] | None = None  # the KFP output artifact's metadata
    reports: bool = False  # also a Markdown and an HTML report (the dashboard's visualisations)

    def artifact_of(self, value: str | None = None) -> str:
        return self.artifact.format(value=value)


# ---- the work of each stage -------------------------------------------------------------------------------------


def _import_base(out: Path, c: StageCall) -> None:
    from cmva.decoding import Decoding, save_decoding
    from cmva.models import import_base, tiny_model

    if c.profile.base.source == "tiny":
        tiny_model(out, seed=c.profile.seed)
    else:
        import_base(out, c.profile.base.source)
    base = c.profile.base
    save_decoding(out, Decoding(no_repeat_ngram_size=base.no_repeat_ngram_size, cpu_dtype=base.cpu_dtype))


def _train_rewards(out: Path, c: StageCall) -> None:
    from cmva.rewards import train_rewards

    train_rewards(out, c.data["socialchem"], c.data["mic"], c.values, c.profile.rewards, seed=c.profile.seed)


def mic_questions(mic: Path, values: list[MoralValue], split: str = "train") -> list[str]:
    """The unique questions of one MIC split (train: the agents' RL prompts; dev: checkpoint selection)."""
    from cmva.data import load_mic

    ds, _ = load_mic(mic, values, split=split)
    return list(dict.fromkeys(ds["question"]))  # unique, file order


def _train_agent(out: Path, c: StageCall) -> None:
    """RL of one agent; `nproc` > 1: data-parallel in that many processes (torchrun; one per GPU), same global batch."""
    from cmva import distributed
    from cmva.agents import train_agent

    if c.value not in [v.name for v in c.values]:
        raise ValueError(f"value {c.value!r} is not in the profile's values {[v.name for v in c.values]}")
    i = c.inputs
    cfg, questions, dev = agent_inputs(c.profile, c.values, c.value, c.data["mic"])
    distributed.call(
        c.nproc, train_agent, c.value, i["base"], i["rewards"], questions, out, cfg, c.profile.base.dtype, dev
    )


def agent_inputs(
    profile: Profile, values: list[MoralValue], value: str, mic: Path
) -> tuple[AgentCfg, list[str], list[str] | None]:
    """One value's agent settings (`Profile.agent_for`), its MIC training questions, and its dev questions when the
    recipe judges dev checkpoints (else None): what the train-agent stage and bench/agent_trial hand `train_agent`."""
    cfg = profile.agent_for(value)
    return cfg, mic_questions(mic, values), mic_questions(mic, values, "dev") if cfg.select_every else None


def _build_aggregator_data(out: Path, c: StageCall) -> None:
    from cmva.aggregator_data import build_aggregator_data
    from cmva.data import load_mic
    from cmva.engine import Engine
    from cmva.rewards import SECOND_DIR, RewardModel

    rows = list(load_mic(c.data["mic"], c.values, split="train")[0])
    engine = Engine(c.inputs["base"], c.inputs["agents"], dtype=c.profile.base.dtype)
    scorer = RewardModel.load(c.inputs["rewards"] / SECOND_DIR)  # not the evaluation's judge (cmva.aggregator_data)
    p = c.profile
    build_aggregator_data(engine, scorer, rows, [v.name for v in c.values], out, p.aggregator, p.seed)


def _train_aggregator(out: Path, c: StageCall) -> None:
    """SFT of the aggregator; `nproc` > 1: data-parallel in that many processes (torchrun), same global batch."""
    from cmva import distributed
    from cmva.aggregator import train_aggregator
    from cmva.aggregator_data import DATA_FILE

    p = c.profile
    data = c.inputs["data"] / DATA_FILE
    distributed.call(c.nproc, train_aggregator, c.inputs["base"], data, out, p.aggregator, p.seed, p.base.dtype)


def _evaluate(out: Path, c: StageCall) -> None:
    from cmva.evaluate import evaluate

    agg, i = c.profile.aggregator, c.inputs
    with run_view(i["base"], i["rewards"], i["agents"], i["aggregator"]) as artifacts:
        report = evaluate(
            artifacts,
            out,
            c.values,
            c.data["mic"],
            c.data.get("eval"),
            c.profile.evaluate,
            agg.skip_zero_weight,
            agg.goodness_weight,
            c.profile.base.dtype,
        )
    log.info("ROUGE-L: %s", json.dumps({s: round(r["rougeL"], 4) for s, r in report["rouge"].items()}))


@contextmanager
def run_view(base: Path, rewards: Path, agents: dict[str, Path], aggregator: Path) -> Iterator[Path]:
    """A run-directory layout (base/, rewards/, agents/<v>/, aggregator/) of these artifacts: the run directory
    they already sit in (an in-process run), else a temporary directory of symlinks to them (KFP artifact
    directories), removed on exit."""
    import tempfile

    dirs = {"base": base, "rewards": rewards, "aggregator": aggregator, **{f"agents/{v}": d for v, d in agents.items()}}
    root = Path(base).parent
    if all(Path(d) == root / rel for rel, d in dirs.items()):
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="cmva-artifacts-") as tmp:
        (Path(tmp) / "agents").mkdir()
        for rel, d in dirs.items():
            (Path(tmp) / rel).symlink_to(Path(d).resolve())
        yield Path(tmp)


# ---- what a finished output reports (KFP metrics and metadata) -------------------------------------------------


def summary_keys(*keys: str) -> Callable[[Path], dict]:
    """The given keys of `<out>/summary.json` that are set, as floats (a training stage's KFP metrics)."""

    def read(out: Path) -> dict:
        s = json.loads((out / "summary.json").read_text())
        return {k: float(s[k]) for k in keys if s.get(k) is not None}

    return read


def _reward_metrics(out: Path) -> dict:
    """Flat held-out metrics: `<value>_accuracy`, `<value>_f1`, `max_pairwise_correlation`."""
    m = json.loads((out / "metrics.json").read_text())
    flat = {f"{v}_{k}": float(d[k]) for v, d in m.items() if not v.startswith("_") for k in ("accuracy", "f1")}
    flat["max_pairwise_correlation"] = float(m["_pairwise_correlation"]["max_pairwise"])
    return flat


def _data_stats(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    keys = ("rows", "questions_with_2plus_targets", "rows_showing_all_agents", "graded_rows_target_top_weight")
    return {k: float(stats[k]) for k in keys if stats.get(k) is not None}


def _eval_metrics(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    metrics = {f"rougeL_{s}": r["rougeL"] for s, r in report["rouge"].items()}
    metrics.update({f"conformity_delta_{v}": c["delta"] for v, c in report["conformity"].items()})
    for system, sens in report["sensitivity"].items():
        key = "sensitivity_" + system.replace("-", "_")
        metrics[key], metrics[f"{key}_n"] = sens["mean_spearman"], sens["n"]
    metrics["specialisation_mean"] = report["specialisation"]["mean_off_diagonal"]
    metrics["reward_correlation_max"] = report["reward_correlation"]["max_pairwise"]
    for system, d in report["paired"].items():
        metrics["paired_win_rate_" + system.replace("-", "_")] = d["win_rate"]
    return metrics


def _base_metadata(out: Path) -> dict:
    return json.loads((out / "cmva_base.json").read_text())


# ---- the declarations ------------------------------------------------------------------------------------------

_GPU_BIG = dict(cpu_request="4", memory_request="16Gi", memory_limit="32Gi", gpu=True)

# Resources are sized for the paper profile (SmolLM2-1.7B, LoRA) on one GPU node; a platform file overrides any field.
STAGES: tuple[Stage, ...] = (
    Stage(
        "import-base",
        artifact="base",
        output="base",
        run=_import_base,
        doc="Base model → plain safetensors checkpoint (GGUF-loaded models refuse training); `base.source` picks it.",
        resources=StageResources(cpu_request="1", memory_request="8Gi", memory_limit="16Gi", timeout_s=3600),
        metadata=_base_metadata,
    ),
    Stage(
        "train-rewards",
        artifact="rewards",
        output="rewards",
        run=_train_rewards,
        doc="One value classifier per moral value (all-MiniLM-L6-v2 fine-tuned); held-out accuracy and F1.",
        resources=StageResources(cpu_request="4", memory_request="8Gi", memory_limit="16Gi", timeout_s=4 * 3600),
        data=("mic", "socialchem"),
        summary=_reward_metrics,
    ),
    Stage(
        "train-agent",
        artifact="agents/{value}",
        output="agent",
        run=_train_agent,
        doc="RL-fine-tune one moral agent (TRL RLOO + LoRA, KL penalty to the PT model) against its value's reward.",
        resources=StageResources(**_GPU_BIG, timeout_s=12 * 3600),
        inputs=("base", "rewards"),
        data=("mic",),
        per_value=True,
        distributed=True,
        summary=summary_keys("reward_first", "reward_last", "kl_last", "steps"),
    ),
    Stage(
        "build-aggregator-data",
        artifact="aggregator-data",
        output="data",
        run=_build_aggregator_data,
        doc="Every agent's answer per MIC training question; rows under several profiles c with c·r(y)-best targets.",
        resources=StageResources(**_GPU_BIG, timeout_s=6 * 3600),
        inputs=("base", "agents", "rewards"),
        data=("mic",),
        output_type="Dataset",
        metadata=_data_stats,
    ),
    Stage(
        "train-aggregator",
        artifact="aggregator",
        output="aggregator",
        run=_train_aggregator,
        doc="LoRA SFT of the contextual aggregator (TRL SFTTrainer, loss on the answer tokens only).",
        resources=StageResources(**_GPU_BIG, timeout_s=12 * 3600),
        inputs=("base", "data"),
        distributed=True,
        summary=summary_keys("loss_first", "loss_last", "steps"),
    ),
    Stage(
        "evaluate",
        artifact="eval",
        output="report",
        run=_evaluate,
        doc="ROUGE vs the baselines, agent conformity, profile following; report as Markdown and HTML, plots inlined.",
        resources=StageResources(**_GPU_BIG, timeout_s=6 * 3600),
        inputs=("base", "rewards", "agents", "aggregator"),
        data=("mic", "eval"),
        summary=_eval_metrics,
        reports=True,
    ),
)
BY_NAME = {s.name: s for s in STAGES}
BY_OUTPUT = {s.output: s for s in STAGES}
# Stages a platform may run as Kubeflow Trainer v2 TrainJobs: their TRL trainers run data-parallel under torchrun.
# train-rewards is not one: its own training loop is not distributed (each process would train a full copy).
DISTRIBUTED = tuple(s.name for s in STAGES if s.distributed)


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None


def input_artifacts(name: str, values: list[str]) -> dict[str, str | dict[str, str]]:
    """A stage's inputs as run-directory artifact names ("agents": {value: "agents/<value>"})."""
    out: dict = {}
    for i in stage(name).inputs:
        if i == "agents":
            out[i] = {v: BY_OUTPUT["agent"].artifact_of(v) for v in values}
        else:
            out[i] = BY_OUTPUT[i].artifact
    return out
