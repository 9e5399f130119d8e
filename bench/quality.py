"""Quality benchmark: the paper's Table 1 (agent conformity) and Figure 2 (ROUGE), plus profile sensitivity.

    .venv/bin/python -m bench.quality [--artifacts DIR] [--data MIC.csv] [--profile cpu]

Artifacts: the given run directory; else runs/<profile> (`cmva run`); else the newest version that
`make run` published under runs/kfp/serving/; else the `cpu` pipeline is run in-process into
runs/<profile> first (≈ 45 min on 2 cores, resumable). Evaluation runs `cmva evaluate` on `--data` (any
MIC-schema CSV; default: the sample's test split). `--from-report R` renders an evaluation that
`cmva evaluate` (or the pipeline's evaluate step) already wrote to R/report.json instead of running it again.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from bench.artifacts import WORK, is_complete
from bench.common import RESULTS, write_result

log = logging.getLogger("bench.quality")


def find_artifacts(requested: str | None, profile: str, values: list[str]) -> Path:
    from cmva.kfp_runner import latest_serving_dir

    if requested:
        if not is_complete(Path(requested), values):
            raise FileNotFoundError(f"{requested}: not a complete run (base/, rewards/, agents/<value>/, aggregator/)")
        return Path(requested)
    if is_complete(Path("runs") / profile, values):
        return Path("runs") / profile
    for root in sorted(Path("runs").glob("kfp*")):
        try:
            return latest_serving_dir(root)
        except FileNotFoundError:
            continue
    from cmva.config import load_profile
    from cmva.pipeline import run_pipeline

    log.info("no %s artifacts yet: running the %s pipeline into runs/%s first", profile, profile, profile)
    run_pipeline(load_profile(profile), Path("runs") / profile)
    return Path("runs") / profile


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="run directory (base/, rewards/, agents/, aggregator/)")
    p.add_argument("--data", help="MIC-schema CSV to evaluate on (default: the sample's test split)")
    p.add_argument("--profile", default="cpu", help="recipe whose evaluation settings are used")
    p.add_argument("--from-report", help="directory of an existing `cmva evaluate` output (report.json + PNGs)")
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cmva.config import load_profile
    from cmva.data import SAMPLE_MIC
    from cmva.evaluate import evaluate
    from cmva.values import resolve_values

    prof = load_profile(a.profile)
    values = resolve_values(prof.values)
    if a.from_report:
        eval_dir, art = Path(a.from_report), a.artifacts or "(see the report)"
        report = json.loads((eval_dir / "report.json").read_text())
    else:
        art = find_artifacts(a.artifacts, a.profile, [v.name for v in values])
        log.info("artifacts: %s", art)
        eval_dir = WORK / "quality-eval"
        report = evaluate(art, eval_dir, values, SAMPLE_MIC, a.data, prof.evaluate, prof.aggregator.skip_zero_weight)
    out = Path(a.out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    for png in ("rouge.png", "conformity.png"):
        shutil.copyfile(eval_dir / png, out / f"quality_{png}")
    result = {"artifacts": str(art), **{k: report[k] for k in ("data", "rows", "rows_with_target", "rouge")}}
    result.update({k: report[k] for k in ("conformity", "sensitivity", "wall_s")})
    result["evaluation_dir"] = str(eval_dir)
    print(write_result("quality", result, render(report, eval_dir), out))


def render(report: dict, eval_dir: Path) -> str:
    from cmva.evaluate import CMVA, ROUGE_KEYS

    rouge, conf = report["rouge"], report["conformity"]
    best = max((s for s in rouge if s != CMVA), key=lambda s: rouge[s]["rougeL"])
    lines = [
        f"Data `{report['data']}`: {report['rows']} rows ({report['rows_with_target']} with a ground-truth answer); "
        f"evaluation wall time {report['wall_s']} s. Every number below comes from the generations in "
        f"`{eval_dir}/generations.jsonl`.",
        "",
        "## Agent conformity to its own value vs the PT model (paper Table 1)",
        "",
        "| value | PT model | moral agent | Δ | agent above PT |",
        "|---|---|---|---|---|",
    ]
    for v, c in conf.items():
        lines.append(
            f"| {v} | {c['pt']:.3f} | {c['agent']:.3f} | {c['delta']:+.3f} | {'yes' if c['delta'] > 0 else 'NO'} |"
        )
    lines += ["", "![conformity](quality_conformity.png)", "", "## ROUGE F1 against MIC's ground truth (paper Fig. 2)"]
    lines += ["", "| system | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum |", "|---|---|---|---|---|"]
    for s, r in rouge.items():
        lines.append(f"| {s} | " + " | ".join(f"{r[k]:.4f}" for k in ROUGE_KEYS) + " |")
    above = rouge[CMVA]["rougeL"] > rouge[best]["rougeL"]
    lines += [
        "",
        f"CMVA-GS ROUGE-L {rouge[CMVA]['rougeL']:.4f} vs best baseline ({best}) {rouge[best]['rougeL']:.4f}: "
        + ("above every baseline." if above else "NOT above every baseline."),
        "",
        "![ROUGE](quality_rouge.png)",
        "",
        "## Profile sensitivity",
        "",
        "Mean Spearman correlation between a requested profile and the value scores of the answer "
        "(several random profiles per question; 1 = follows the profile perfectly, 0 = ignores it):",
        "",
        "| system | mean Spearman | answers |",
        "|---|---|---|",
    ]
    for s, d in report["sensitivity"].items():
        lines.append(f"| {s} | {d['mean_spearman']:.3f} | {d['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
