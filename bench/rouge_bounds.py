"""What bounds CMVA-GS's ROUGE: the agents' own answers against MIC's, read from a finished evaluation.

    .venv/bin/python -m bench.rouge_bounds --report RUN/outputs/cmva-gs-<id>/evaluate/report

From the evaluation's `generations.jsonl` (each system's and each agent's answer per test question, under MIC's
own profile) and its data file: ROUGE-L of every system and agent on the rows with a target, as `cmva evaluate`
computes it; two selectors over the agents' answers — the agent of the profile's heaviest value (what following
the profile alone gives; the PT model's where every weight is 0) and the best agent per question by ROUGE itself (an oracle: no selector does better) —
each with its paired difference to few-shot; and which agent CMVA-GS's answer copies (same first 12 words).
Writes bench/results/rouge_bounds.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import write_result


def load(report: Path) -> tuple[list[str], dict[str, dict[str, str]], dict[str, dict], list[str], list[str]]:
    """(values, {system: {row id: answer}} under MIC's own profile, {row id: profile}, targets, their row ids)."""
    from cmva.data import load_mic
    from cmva.values import resolve_values

    meta = json.loads((report / "report.json").read_text())
    values = list(meta.get("conformity") or {})  # the agents the run evaluated
    values = values or [v.name for v in resolve_values()]
    rows = [r for r in load_mic(meta["data"], resolve_values(values))[0] if r["split"] in ("test", "all")]
    answers: dict[str, dict[str, str]] = {}
    profiles: dict[str, dict] = {}
    for line in (report / "generations.jsonl").read_text().splitlines():
        g = json.loads(line)
        if not g.get("probe"):
            answers.setdefault(g["system"], {})[g["row_id"]] = g["text"]
            profiles[g["row_id"]] = g["profile"]
    ids = [r["id"] for r in rows if r["target"] and r["id"] in profiles]
    targets = {r["id"]: r["target"] for r in rows}
    return values, answers, profiles, [targets[i] for i in ids], ids


def bounds(values, answers, profiles, targets, ids) -> dict:
    from cmva.evaluate import rouge_scores
    from cmva.profile_metrics import bootstrap_ci, paired_delta

    agents = {v: answers[f"agent:{v}"] for v in values}
    heaviest = [max(profiles[i], key=profiles[i].get) if any(profiles[i].values()) else None for i in ids]
    systems = {s: [a[i] for i in ids] for s, a in answers.items() if all(i in a for i in ids)}
    per_row = {s: d["rougeL"] for s, d in rouge_scores(systems, targets).items()}
    per_row["selector: the profile's heaviest value's agent"] = [
        per_row[f"agent:{v}" if v else "pt"][k]
        for k, v in enumerate(heaviest)  # no value asked: the PT model's
    ]
    per_row["oracle: the best agent per question"] = [
        max(per_row[f"agent:{v}"][k] for v in values) for k in range(len(ids))
    ]
    table = {
        s: {"rougeL": float(np.mean(x)), "ci95": bootstrap_ci(x), "vs_few_shot": paired_delta(x, per_row["few-shot"])}
        for s, x in per_row.items()
    }
    return {"rows": len(ids), "table": table, "copies": copies(answers["cmva-gs"], agents, heaviest, ids)}


def copies(cmva: dict, agents: dict, heaviest: list[str], ids: list[str]) -> dict[str, int]:
    """How many CMVA-GS answers open like the heaviest value's agent's, like another agent's, or like none
    (`cmva.profile_metrics.same_opening`; apart: the rows whose profile weighs every value 0)."""
    from cmva.profile_metrics import same_opening

    n: Counter = Counter()
    for i, v in zip(ids, heaviest, strict=True):
        same = [a for a, ans in agents.items() if same_opening([cmva[i]], [ans[i]]) == 1.0]
        kind = "the heaviest value's agent" if v in same else "another agent" if same else "no agent"
        n[kind + ("" if v else " (profile all zero)")] += 1
    return dict(n)


def render(r: dict) -> str:
    lines = [
        f"Report `{r['report']}`; {r['rows']} test questions with a MIC answer, each asked under MIC's own profile. "
        "ROUGE-L F1 as `cmva evaluate` computes it; 95 % bootstrap CIs; Δ: paired difference to few-shot.",
        "",
        "| system / selector | ROUGE-L | 95 % CI | Δ vs few-shot [95 % CI] |",
        "|---|---|---|---|",
    ]
    for s, x in sorted(r["table"].items(), key=lambda kv: -kv[1]["rougeL"]):
        lo, hi = x["ci95"]
        d = x["vs_few_shot"]
        lines.append(
            f"| {s} | {x['rougeL']:.4f} | [{lo:.4f}, {hi:.4f}] | {d['delta']:+.4f} "
            f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] |"
        )
    c = r["copies"]
    lines += ["", "CMVA-GS's answer starts like (first 12 words): "
              + ", ".join(f"{k} {v}" for k, v in c.items()) + f" (of {r['rows']})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", required=True, type=Path, help="an evaluation's report directory")
    p.add_argument("--commit", help="the commit the run was made at (default: this checkout's)")
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    result = {"report": str(a.report), "commit": a.commit, **bounds(*load(a.report))}
    print(write_result("rouge_bounds", result, render(result), a.out))


if __name__ == "__main__":
    main()
