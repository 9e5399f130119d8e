"""Retrain one moral agent of a finished run with other agent settings and compare it with the run's own agent.

    .venv/bin/python -m bench.agent_trial --run runs/kfp/cpu/outputs/cmva-gs-<id> --value care \\
        --set agent.learning_rate=1e-3 --set agent.max_steps=12

Reads the run's base model and reward models (kfp.local layout `import-base/base`, `train-rewards/rewards`,
`evaluate/report`; or a `cmva run` directory: `base`, `rewards`, `eval`) and the evaluation's greedy answers of the
PT model and of every agent on the test questions. The new agent (the run's profile with `--set` applied, same
seed) answers the same questions with the evaluation's generation settings. Judged by the run's reward models:
its conformity to its value over the PT model (paper Table 1: Δ with a bootstrap 95 % CI, share of the gap to 1.0
closed) beside the run's agent's, and its row of the specialisation matrix P[r_v(agent v) > r_v(agent j)] against
the run's other agents. Writes bench/results/agent_trial_<value>.md (+ .json).

`--train-only` trains the agent into `--work` and stops (its summary.json, training_log.json, model card there): it
needs only the run's base and reward models, e.g. of a run stopped after its reward stage; judge such agents on
the MIC dev questions with bench/agent_dev.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import write_result

LAYOUTS = (
    {"base": "import-base/base", "rewards": "train-rewards/rewards", "report": "evaluate/report"},
    {"base": "base", "rewards": "rewards", "report": "eval"},
)


def run_layout(run: str | Path, need: tuple[str, ...] = ("base", "rewards", "report")) -> dict[str, Path]:
    """The run's base model, reward models and evaluation report directories (those in `need`), in either layout."""
    root = Path(run)
    for layout in LAYOUTS:
        paths = {k: root / v for k, v in layout.items() if k in need}
        if all(p.is_dir() for p in paths.values()):
            return paths
    raise SystemExit(f"{root}: no finished run there (needs {', '.join(need)})")


def evaluation_answers(report_dir: Path) -> dict[str, dict[str, str]]:
    """system → {row id → answer} for the evaluation's test rows (no probes)."""
    out: dict[str, dict[str, str]] = {}
    for line in (report_dir / "generations.jsonl").read_text().splitlines():
        g = json.loads(line) if line.strip() else None
        if g and g.get("probe") is None:
            out.setdefault(g["system"], {})[g["row_id"]] = g["text"]
    return out


def compare(value: str, scores: dict[str, list[float]], others: dict[str, list[float]]) -> dict:
    """Conformity of the trial agent and of the run's agent over the PT model, and each one's specialisation row
    P[r_v(it) > r_v(agent j)] (ties 1/2, as the evaluation's matrix). `scores`: "pt" / "run" / "trial" → r_v of each
    answer; `others`: agent j → r_v of its answers to the same questions.

    Example:
        >>> r = compare("care", {"pt": [0.2, 0.4], "run": [0.3, 0.5], "trial": [0.6, 0.4]}, {"loyalty": [0.5, 0.4]})
        >>> round(r["conformity"]["trial"]["delta"], 3), r["specialisation"]["trial"]["loyalty"]
        (0.2, 0.75)
    """
    import numpy as np

    from cmva.reward_diagnostics import conformity

    def row(mine) -> dict[str, float]:
        a = np.asarray(mine)
        return {j: float(np.mean((a > np.asarray(b)) + 0.5 * (a == np.asarray(b)))) for j, b in others.items()}

    return {
        "conformity": {k: conformity({value: scores["pt"]}, {value: scores[k]})[value] for k in ("run", "trial")},
        "specialisation": {k: row(scores[k]) for k in ("run", "trial")},
    }


def train(paths: dict[str, Path], value: str, profile_name: str, sets: dict, out: Path, data: Path) -> dict:
    """Train the agent with the run's profile + `sets` on the MIC training questions of `data` into `out` (the
    train-agent stage's settings and questions, `cmva.stages.agent_inputs`); the training summary + "train_s"."""
    from cmva.agents import train_agent
    from cmva.config import load_profile
    from cmva.stages import agent_inputs
    from cmva.values import resolve_values

    profile = load_profile(profile_name, sets)
    cfg, train_questions, dev = agent_inputs(profile, resolve_values(profile.values), value, data)
    t0 = time.time()
    summary = train_agent(value, paths["base"], paths["rewards"], train_questions, out, cfg, dev_questions=dev)
    return {**summary, "train_s": round(time.time() - t0, 1), "dtype": profile.base.dtype}


def train_and_answer(
    paths: dict[str, Path], report: dict, value: str, profile_name: str, sets: dict, out: Path, questions: list[str]
) -> dict:
    """`train` on the run's data; the agent's greedy answers to `questions` with the evaluation's generation
    settings; the training summary."""
    from cmva.aggregator import agent_answers
    from cmva.engine import Engine

    summary = train(paths, value, profile_name, sets, out, Path(report["data"]))
    engine = Engine(paths["base"], {value: out}, dtype=summary["dtype"])
    cfg = report["config"]
    answers = agent_answers(
        engine,
        questions,
        [[value]] * len(questions),
        max_new_tokens=cfg["max_new_tokens"],
        batch_size=cfg["batch_size"],
    )
    return {"answers": [a[value] for a in answers], "summary": summary}


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render(r: dict) -> str:
    v, c, s = r["value"], r["conformity"], r["specialisation"]
    lines = [
        f"Run `{r['run']}`, value **{v}**, profile {r['profile']} with {json.dumps(r['sets'])} (training {r['train_s']}"
        f" s; RL reward {_num(r['reward_first'])} → {_num(r['reward_last'])}, KL {_num(r['kl_last'])}); "
        f"{r['questions']} test questions.",
        "",
        "| agent | PT model | agent | Δ | Δ 95 % CI | gap to 1.0 closed | mean specialisation row |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, name in (("run", "the run's"), ("trial", "retrained")):
        lo, hi = c[k]["delta_ci95"]
        row = list(s[k].values())
        lines.append(
            f"| {name} | {c[k]['pt']:.3f} | {c[k]['agent']:.3f} | {c[k]['delta']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
            f"{c[k]['gap_closed']:.0%} | {sum(row) / len(row):.3f} |"
        )
    lines += ["", "Specialisation row P[r_v(agent v) > r_v(agent j)]: " + json.dumps(s)]
    if r.get("dev_history"):
        judged = ", ".join(f"{h['step']}: {h['dev_reward']:.3f}" for h in r["dev_history"])
        lines += ["", f"Dev-checkpoint selection kept step {r['selected_step']} (mean dev reward by step: {judged})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, train_answer=train_and_answer) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run (kfp.local outputs/cmva-gs-<id> or `cmva run` dir)")
    ap.add_argument("--value", required=True)
    ap.add_argument("--profile", default="cpu", help="the run's profile (its recipe, before --set)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, e.g. agent.beta=0.2")
    ap.add_argument("--work", default=None, help="where the new adapter goes (default: a temporary directory)")
    ap.add_argument("--out", default=None, help="results directory (default bench/results)")
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="only train into --work (needs the run's base and rewards, not its evaluation), on --mic; no report",
    )
    ap.add_argument("--mic", default=None, help="with --train-only: MIC-schema CSV (default: the bundled sample)")
    a = ap.parse_args(argv)
    import tempfile

    from cmva.config import parse_sets
    from cmva.data import SAMPLE_MIC, load_mic
    from cmva.rewards import RewardModel
    from cmva.values import resolve_values

    sets = parse_sets(a.sets)  # the cmva CLI's own --set parsing
    work = Path(a.work or tempfile.mkdtemp(prefix="cmva-agent-trial-"))
    if a.train_only:
        train(run_layout(a.run, ("base", "rewards")), a.value, a.profile, sets, work, Path(a.mic or SAMPLE_MIC))
        return work / "summary.json"
    paths = run_layout(a.run)
    gens = evaluation_answers(paths["report"])
    if f"agent:{a.value}" not in gens:
        raise SystemExit(f"the run's evaluation has no agent {a.value!r}: {sorted(gens)}")
    report = json.loads((paths["report"] / "report.json").read_text())
    rows = [r for r in load_mic(report["data"], resolve_values(), split="test")[0] if r["id"] in gens["pt"]]
    t = train_answer(paths, report, a.value, a.profile, dict(sets), work, [r["question"] for r in rows])
    judge = RewardModel.load(paths["rewards"])
    score = lambda texts: judge.score(texts)[a.value]  # noqa: E731
    ids = [r["id"] for r in rows]
    scores = {
        "pt": score([gens["pt"][i] for i in ids]),
        "run": score([gens[f"agent:{a.value}"][i] for i in ids]),
        "trial": score(t["answers"]),
    }
    others = {s[6:]: score([gens[s][i] for i in ids]) for s in gens if s.startswith("agent:") and s[6:] != a.value}
    summ = t["summary"]
    result = {
        "run": str(a.run),
        "value": a.value,
        "profile": a.profile,
        "sets": sets,
        "questions": len(rows),
        "train_s": summ["train_s"],
        **{k: summ.get(k) for k in ("reward_first", "reward_last", "kl_last", "selected_step", "dev_history")},
        **compare(a.value, scores, others),
        "answers": t["answers"],
    }
    return write_result(f"agent_trial_{a.value}", result, render(result), a.out)


if __name__ == "__main__":
    print(main())
