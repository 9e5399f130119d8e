"""One function per pipeline stage: `(output directory, inputs, profile) -> None`.

The in-process runner (`cmva.pipeline`), the CLI subcommands and the KFP components all call these, so
nothing is implemented twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from cmva.config import Profile
from cmva.values import MoralValue

log = logging.getLogger(__name__)


def import_base_stage(out: Path, profile: Profile) -> None:
    from cmva.models import import_base, tiny_model

    if profile.base.source == "tiny":
        tiny_model(out, seed=profile.seed)
    else:
        import_base(out, profile.base.source)


def rewards_stage(out: Path, socialchem: Path, mic: Path, values: list[MoralValue], profile: Profile) -> None:
    from cmva.rewards import train_rewards

    train_rewards(out, socialchem, mic, values, profile.rewards, seed=profile.seed)


def training_questions(mic: Path, values: list[MoralValue]) -> list[str]:
    from cmva.data import load_mic

    ds, _ = load_mic(mic, values, split="train")
    return list(dict.fromkeys(ds["question"]))  # unique, file order


def agent_stage(
    out: Path,
    value: str,
    base: Path,
    rewards: Path,
    mic: Path,
    values: list[MoralValue],
    profile: Profile,
    nproc: int = 1,
) -> None:
    """RL of one agent; `nproc` > 1: data-parallel in that many processes (torchrun; one per GPU), same global batch."""
    from cmva import distributed
    from cmva.agents import train_agent

    questions = training_questions(mic, values)
    p = profile
    distributed.call(nproc, train_agent, value, base, rewards, questions, out, p.agent, p.seed, p.base.dtype)


def aggregator_data_stage(
    out: Path,
    base: Path,
    agents: Mapping[str, Path],
    rewards: Path,
    mic: Path,
    values: list[MoralValue],
    profile: Profile,
) -> None:
    from cmva.aggregator_data import build_aggregator_data
    from cmva.data import load_mic
    from cmva.engine import Engine
    from cmva.rewards import SECOND_DIR, RewardModel

    rows = list(load_mic(mic, values, split="train")[0])
    engine = Engine(base, agents, dtype=profile.base.dtype)
    scorer = RewardModel.load(rewards / SECOND_DIR)  # not the evaluation's judge (cmva.aggregator_data)
    build_aggregator_data(engine, scorer, rows, [v.name for v in values], out, profile.aggregator, profile.seed)


def aggregator_stage(out: Path, base: Path, data_dir: Path, profile: Profile, nproc: int = 1) -> None:
    """SFT of the aggregator; `nproc` > 1: data-parallel in that many processes (torchrun), same global batch."""
    from cmva import distributed
    from cmva.aggregator import train_aggregator
    from cmva.aggregator_data import DATA_FILE

    p = profile
    distributed.call(nproc, train_aggregator, base, data_dir / DATA_FILE, out, p.aggregator, p.seed, p.base.dtype)


def evaluate_stage(
    out: Path, artifacts: Path, mic: Path, values: list[MoralValue], profile: Profile, data: Path | None = None
) -> dict:
    from cmva.evaluate import evaluate

    agg = profile.aggregator
    report = evaluate(
        artifacts,
        out,
        values,
        mic,
        data,
        profile.evaluate,
        agg.skip_zero_weight,
        agg.goodness_weight,
        profile.base.dtype,
    )
    log.info("ROUGE-L: %s", json.dumps({s: round(r["rougeL"], 4) for s, r in report["rouge"].items()}))
    return report
