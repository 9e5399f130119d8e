"""Compare other agents' adapters with a finished run's agents on the MIC dev questions, which no stage trains or
evaluates on: a recipe setting is chosen here, not on the test split.

    .venv/bin/python -m bench.agent_dev --run runs/kfp/cpu/outputs/cmva-gs-<id> \\
        --candidate constant=/tmp/trials/constant_{value}

Every agent (the run's and each candidate's, `{value}` in the path filled per value; values with no adapter there are
skipped) answers the dev questions greedily with the evaluation's generation settings; the run's reward model of
the agent's own value scores each answer. Per value: mean dev reward of each set, and each candidate's paired
difference to the run's agent with a bootstrap 95 % CI; the mean difference over values. Writes
bench/results/agent_dev.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.agent_trial import run_layout
from bench.common import write_result

RUN = "run"
RUN_AGENTS = ("collect-agents/agents", "agents")  # kfp.local layout, `cmva run` directory


def run_agents(run: Path) -> dict[str, Path]:
    """value → the run's agent adapter directory."""
    for sub in RUN_AGENTS:
        if (run / sub).is_dir():
            return {d.name: d for d in sorted((run / sub).iterdir()) if (d / "adapter_config.json").is_file()}
    raise SystemExit(f"{run}: no agents there (looked for {', '.join(RUN_AGENTS)})")


def candidate_sets(specs: list[str], values: list[str]) -> dict[str, dict[str, Path]]:
    """`name=path/with/{value}` → {name: {value: adapter dir}} for the values whose adapter exists.

    Example:
        >>> candidate_sets(["c=/nowhere/{value}"], ["care"])
        Traceback (most recent call last):
        SystemExit: candidate 'c': no adapter at /nowhere/{value} for any of ['care']
    """
    out = {}
    for spec in specs:
        name, sep, template = spec.partition("=")
        if not sep or "{value}" not in template or name == RUN:
            raise SystemExit(f"--candidate wants NAME=PATH with {{value}} in PATH (NAME not {RUN!r}), got {spec!r}")
        found = {v: Path(template.format(value=v)) for v in values}
        out[name] = {v: p for v, p in found.items() if (p / "adapter_config.json").is_file()}
        if not out[name]:
            raise SystemExit(f"candidate {name!r}: no adapter at {template} for any of {values}")
    return out


def dev_compare(scores: dict[str, dict[str, list[float]]]) -> dict:
    """`scores`: set name → value → dev reward of that set's agent per question (the run's set under "run").

    Example:
        >>> r = dev_compare({"run": {"care": [0.2, 0.4]}, "c": {"care": [0.5, 0.5]}})
        >>> round(r["values"]["care"]["c"]["delta"], 6), round(r["mean_delta"]["c"], 6)
        (0.2, 0.2)
    """
    import numpy as np

    from cmva.reward_diagnostics import conformity  # the paired Δ + bootstrap CI of paper Table 1, run as baseline

    run = scores[RUN]
    values = {v: {RUN: {"mean": float(np.mean(b))}} for v, b in run.items()}
    for name, by_value in scores.items():
        if name != RUN:
            for v, c in conformity(run, by_value).items():
                values[v][name] = {"mean": c["agent"], "delta": c["delta"], "delta_ci95": c["delta_ci95"]}
    names = [n for n in scores if n != RUN]
    mean = {n: float(np.mean([r[n]["delta"] for r in values.values() if n in r])) for n in names}
    return {"values": values, "mean_delta": mean}


def answer_dev(paths: dict[str, Path], report: dict, sets: dict[str, dict[str, Path]], questions: list[str]):
    """set name → value → greedy answer of that set's agent to each dev question (one engine, all adapters)."""
    from cmva.aggregator import agent_answers
    from cmva.engine import Engine

    names = {f"{n}__{v}": (n, v) for n, by_value in sets.items() for v in by_value}
    engine = Engine(paths["base"], {a: sets[n][v] for a, (n, v) in names.items()})
    cfg = report["config"]
    answers = agent_answers(
        engine, questions, [list(names)] * len(questions), cfg["max_new_tokens"], cfg.get("batch_size", 16), "dev"
    )
    out: dict[str, dict[str, list[str]]] = {}
    for a, (n, v) in names.items():
        out.setdefault(n, {})[v] = [row[a] for row in answers]
    return out


def render(r: dict) -> str:
    names = list(r["mean_delta"])
    lines = [
        f"Run `{r['run']}`; {r['questions']} MIC dev questions; greedy answers scored by the run's reward of the "
        f"agent's own value; candidates: " + ", ".join(f"**{n}** `{r['candidates'][n]}`" for n in names) + ".",
        "",
        "| value | run's agent | " + " | ".join(f"{n} | Δ | Δ 95 % CI" for n in names) + " |",
        "|---|---|" + "---|---|---|" * len(names),
    ]
    for v, row in r["values"].items():
        cells = [f"| {v} | {row[RUN]['mean']:.3f} |"]
        for n in names:
            c = row.get(n)
            cells.append(
                " – | – | – |"
                if c is None
                else f" {c['mean']:.3f} | {c['delta']:+.3f} | [{c['delta_ci95'][0]:+.3f}, {c['delta_ci95'][1]:+.3f}] |"
            )
        lines.append("".join(cells))
    lines.append("| mean Δ | |" + "".join(f" | {r['mean_delta'][n]:+.3f} | |" for n in names))
    return "\n".join(lines + looping_lines(r.get("looping", {}))) + "\n"


def looping(answers: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, float]]:
    """set name → value → share of that agent's answers that repeat one of their own word 4-grams (loops).

    Example:
        >>> looping({"run": {"care": ["be kind and be kind and be kind and", "be kind"]}})
        {'run': {'care': 0.5}}
    """
    from cmva.text_metrics import looping_share

    return {n: {v: looping_share(texts) for v, texts in by_value.items()} for n, by_value in answers.items()}


def looping_lines(rep: dict[str, dict[str, float]]) -> list[str]:
    if not rep:
        return []
    values = list(next(iter(rep.values())))
    lines = ["", "Answers that repeat one of their own word 4-grams:", ""]
    lines += ["| value | " + " | ".join(rep) + " |", "|---|" + "---|" * len(rep)]
    lines += [f"| {v} | " + " | ".join(f"{rep[n][v]:.0%}" if v in rep[n] else "–" for n in rep) + " |" for v in values]
    return lines


def main(argv: list[str] | None = None, answer=answer_dev) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run (kfp.local outputs/cmva-gs-<id> or `cmva run` dir)")
    ap.add_argument("--candidate", action="append", required=True, help="NAME=PATH, PATH with {value}")
    ap.add_argument("--out", default=None, help="results directory (default bench/results)")
    a = ap.parse_args(argv)
    from cmva.rewards import RewardModel
    from cmva.stages import mic_questions
    from cmva.values import resolve_values

    paths = run_layout(a.run)
    report = json.loads((paths["report"] / "report.json").read_text())
    sets = {RUN: run_agents(Path(a.run))}
    sets.update(candidate_sets(a.candidate, list(sets[RUN])))
    questions = mic_questions(Path(report["data"]), resolve_values(), "dev")
    answers = answer(paths, report, sets, questions)
    judge = RewardModel.load(paths["rewards"])
    scores = {n: {v: judge.score(texts)[v] for v, texts in by_value.items()} for n, by_value in answers.items()}
    result = {
        "run": str(a.run),
        "questions": len(questions),
        "candidates": dict(spec.split("=", 1) for spec in a.candidate),
        **dev_compare(scores),
        "looping": looping(answers),
    }
    return write_result("agent_dev", result, render(result), a.out)


if __name__ == "__main__":
    print(main())
