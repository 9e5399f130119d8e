"""The cost of a training step with TRL's own CPU scoring and with cmva.label_scoring, alternating, in one run.

TRL 1.16's fused LM head projects every position onto the vocabulary on a CPU, prompt and padding included;
`cmva.label_scoring` makes it project only the labelled ones (the answer tokens). This bench trains, on a finished
run's base, reward models and aggregator data, the aggregator (SFT) and one agent (RLOO) for a few steps each way,
alternating (own, labelled-only, own, labelled-only, … per `--rounds`), and records each trial's training wall time
and its per-step loss (SFT) or reward and KL (RLOO): the two ways must train alike.

    .venv/bin/python -m bench.train_steps --run runs/kfp/cpu/outputs/cmva-gs-<id> [--sft-steps 4 --rl-steps 3]

Writes bench/results/train_steps.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from bench.agent_trial import run_layout
from bench.common import write_result

WAYS = ("trl-own", "labelled-only")


def scoring(way: str) -> ExitStack:
    """A context in which cmva's trainers keep TRL's own CPU scoring ("trl-own") or patch it ("labelled-only"); TRL's
    switch is restored when it ends."""
    import trl.trainer.utils as trl_utils
    from trl.kernels.chunked_logprob import _use_triton

    from cmva import label_scoring

    stack = ExitStack()
    stack.enter_context(mock.patch.object(trl_utils, "_use_triton", _use_triton))
    if way == "trl-own":
        stack.enter_context(mock.patch.object(label_scoring, "score_labelled_positions_only", lambda: False))
    return stack


def sft_trial(paths: dict[str, Path], profile: str, data: Path, steps: int, work: Path) -> dict:
    """The profile's aggregator recipe for `steps` steps: training wall time (s) and the loss of each step."""
    from cmva.aggregator import train_aggregator
    from cmva.config import load_profile

    cfg = load_profile(profile, {"aggregator.max_steps": steps}).aggregator
    s = train_aggregator(paths["base"], data, work, cfg)
    log = json.loads((work / "training_log.json").read_text())
    return {"wall_s": s["wall_s"], "steps": s["steps"], "per_step": [round(h["loss"], 6) for h in log]}


def rl_trial(paths: dict[str, Path], profile: str, value: str, steps: int, work: Path, mic: Path) -> dict:
    """The profile's recipe for `value`'s agent, `steps` RLOO steps: training wall time, each step's reward and KL."""
    from cmva.agents import train_agent
    from cmva.config import load_profile
    from cmva.stages import agent_inputs
    from cmva.values import resolve_values

    p = load_profile(profile, {"agent.max_steps": steps})
    cfg, questions, dev = agent_inputs(p, resolve_values(p.values), value, mic)
    s = train_agent(value, paths["base"], paths["rewards"], questions, work, cfg, dev_questions=dev)
    log = json.loads((work / "training_log.json").read_text())
    per_step = [(round(h["reward"], 6), round(h["kl"] or 0.0, 6)) for h in log]
    return {"wall_s": s["wall_s"], "steps": s["steps"], "per_step": per_step}


def trials(a: argparse.Namespace, paths: dict[str, Path], data: Path, mic: Path) -> list[dict]:
    """Every trial, in order: per round, each way (TRL's own, then labelled-only) trains SFT then RLOO."""
    out = []
    for r in range(a.rounds):
        for way in WAYS:
            for kind, fn in (
                ("sft", lambda w: sft_trial(paths, a.profile, data, a.sft_steps, w)),
                ("rloo", lambda w: rl_trial(paths, a.profile, a.value, a.rl_steps, w, mic)),
            ):
                with scoring(way), tempfile.TemporaryDirectory(prefix="cmva-train-steps-") as w:
                    t = fn(Path(w))
                out.append({"round": r, "way": way, "trainer": kind, **t})
                print(json.dumps(out[-1]), flush=True)
    return out


def render(r: dict) -> str:
    lines = [
        f"Run `{r['run']}`; aggregator SFT for {r['sft_steps']} steps (the `cpu` recipe: 8 rows per step), the "
        f"{r['value']} agent's RLOO for {r['rl_steps']} steps (16 completions × 32 tokens per step); the two ways "
        "alternate, each trial a fresh trainer. Seconds per step: the trial's training wall time ÷ steps (model "
        "loading excluded).",
        "",
        "| trainer | way | round | s per step | per step (loss, or reward and KL) |",
        "|---|---|---|---|---|",
    ]
    for t in r["trials"]:
        lines.append(
            f"| {t['trainer']} | {t['way']} | {t['round']} | {t['wall_s'] / max(t['steps'], 1):.1f} | "
            f"{json.dumps(t['per_step'])} |"
        )
    lines += ["", "Mean seconds per step: " + json.dumps(r["mean_s_per_step"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run: kfp.local outputs/cmva-gs-<id>, or a `cmva run` dir")
    ap.add_argument("--profile", default="cpu", help="the recipe whose aggregator and agent settings are trained")
    ap.add_argument("--value", default="loyalty", help="the agent trained by RLOO")
    ap.add_argument("--sft-steps", type=int, default=4)
    ap.add_argument("--rl-steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--mic", default=None, help="MIC-schema CSV of the RL questions (default: the bundled sample)")
    ap.add_argument("--out", default=None, help="results directory (default bench/results)")
    a = ap.parse_args(argv)
    from cmva.aggregator_data import DATA_FILE
    from cmva.data import SAMPLE_MIC

    paths = run_layout(a.run, ("base", "rewards"))
    data = next(iter(sorted(Path(a.run).glob(f"**/{DATA_FILE}"))), None)
    if data is None:
        raise SystemExit(f"{a.run}: no {DATA_FILE} (the aggregator's data) in that run")
    ts = trials(a, paths, data, Path(a.mic or SAMPLE_MIC))
    mean = {
        f"{k}/{w}": round(sum(t["wall_s"] / t["steps"] for t in sel) / len(sel), 1)
        for k in ("sft", "rloo")
        for w in WAYS
        if (sel := [t for t in ts if t["trainer"] == k and t["way"] == w])
    }
    result = {
        "run": Path(a.run).name,
        "profile": a.profile,
        "value": a.value,
        "sft_steps": a.sft_steps,
        "rl_steps": a.rl_steps,
    }
    result |= {"trials": ts, "mean_s_per_step": mean}
    return write_result("train_steps", result, render(result), a.out)


if __name__ == "__main__":
    print(main())
