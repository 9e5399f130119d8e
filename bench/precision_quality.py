"""Does quality hold in another precision? Two or more `cmva evaluate` reports on the same artifacts, side by side.

    .venv/bin/cmva evaluate --artifacts RUN --set evaluate.dtype=bfloat16 --out /tmp/eval-bf16
    .venv/bin/python -m bench.precision_quality --ref RUN_REPORT_DIR --compare bfloat16=/tmp/eval-bf16

The reference is the run's own (float32) report. For each compared report: ROUGE-L of every system with its
bootstrap 95 % CI, each agent's conformity gain over the PT model, the graded and paired profile-following figures,
how often CMVA-GS opens with the selector's answer, the evaluation's phase times, and how many of the generations
are word for word the reference's. "Holds" means CMVA-GS's ROUGE-L lies inside the reference's CI (the issue's test
for a cheaper precision). Writes bench/results/precision_quality.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import write_result


def load(report_dir: str | Path) -> tuple[dict, list[dict]]:
    d = Path(report_dir)
    gens = [json.loads(line) for line in (d / "generations.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((d / "report.json").read_text()), gens


def summary(report: dict, gens: list[dict], ref_gens: list[dict]) -> dict:
    """The figures compared, from one report (and its generations against the reference's)."""
    same = sum(a["text"] == b["text"] for a, b in zip(gens, ref_gens, strict=False))
    return {
        "precision": report["config"].get("dtype") or report["config"].get("quantize") or "float32",
        "rougeL": {s: [r["rougeL"], *report["rouge_ci95"][s]["rougeL"]] for s, r in report["rouge"].items()},
        "conformity_delta": {v: c["delta"] for v, c in report["conformity"].items()},
        "graded": report["sensitivity"]["cmva-gs"]["mean_spearman"],
        "paired": [report["paired"]["cmva-gs"]["win_rate"], *report["paired"]["cmva-gs"]["ci95"]],
        "selector_agreement": report.get("selector_agreement"),
        "phases_s": report.get("phases_s"),
        "identical_generations": [same, len(gens)],
    }


def render(r: dict) -> str:
    ref = r["reports"]["reference"]
    names = list(r["reports"])
    lines = [f"Reference: `{r['ref']}`; compared: " + ", ".join(f"{k} `{v}`" for k, v in r["compare"].items()), ""]
    lines += ["| figure | " + " | ".join(f"{n} ({r['reports'][n]['precision']})" for n in names) + " |"]
    lines += ["|---" * (len(names) + 1) + "|"]
    for s in ref["rougeL"]:
        cells = [
            f"{x['rougeL'][s][0]:.3f} [{x['rougeL'][s][1]:.3f}, {x['rougeL'][s][2]:.3f}]" for x in r["reports"].values()
        ]
        lines.append(f"| ROUGE-L {s} | " + " | ".join(cells) + " |")
    for v in ref["conformity_delta"]:
        lines.append(
            f"| conformity Δ {v} | "
            + " | ".join(f"{x['conformity_delta'][v]:+.3f}" for x in r["reports"].values())
            + " |"
        )
    rows = {
        "graded Spearman (CMVA-GS)": lambda x: f"{x['graded']:.3f}",
        "paired win rate (CMVA-GS)": lambda x: f"{x['paired'][0]:.3f} [{x['paired'][1]:.3f}, {x['paired'][2]:.3f}]",
        "opens with the selector's answer (paired / graded)": lambda x: "{paired} / {graded}".format(
            **(x["selector_agreement"] or {"paired": "n/a", "graded": "n/a"})
        ),
        "generations identical to the reference's": lambda x: (
            f"{x['identical_generations'][0]} of {x['identical_generations'][1]}"
        ),
        "phases (s)": lambda x: ", ".join(f"{k} {v}" for k, v in (x["phases_s"] or {}).items()),
    }
    for label, fn in rows.items():
        lines.append(f"| {label} | " + " | ".join(fn(x) for x in r["reports"].values()) + " |")
    lines += ["", "| compared | CMVA-GS ROUGE-L inside the reference's 95 % CI |", "|---|---|"]
    lo, hi = ref["rougeL"]["cmva-gs"][1:]
    for n in names[1:]:
        x = r["reports"][n]["rougeL"]["cmva-gs"][0]
        lines.append(f"| {n} | {x:.3f} in [{lo:.3f}, {hi:.3f}]: {'holds' if lo <= x <= hi else 'DOES NOT HOLD'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="the run's own evaluation report directory (float32)")
    p.add_argument(
        "--compare", nargs="+", required=True, help="NAME=DIR: reports of `cmva evaluate --set evaluate.dtype=…`"
    )
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    ref_report, ref_gens = load(a.ref)
    compare = dict(c.split("=", 1) for c in a.compare)
    reports = {"reference": summary(ref_report, ref_gens, ref_gens)}
    for name, d in compare.items():
        reports[name] = summary(*load(d), ref_gens)
    result = {"ref": a.ref, "compare": compare, "reports": reports}
    print(write_result("precision_quality", result, render(result), a.out))


if __name__ == "__main__":
    main()
