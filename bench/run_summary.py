"""The README's Results section, from a finished `make run`: every figure read from the run's own files.

    $ /usr/bin/time -v make run > make-run.log 2>&1
    $ .venv/bin/python -m bench.run_summary --root runs/kfp/cpu --log make-run.log

Reads the latest local KFP run under ROOT (rewards metrics, each agent's summary, the evaluation report) and, with
--log, the stage timings kfp.local printed and the wall time / peak RSS of `/usr/bin/time -v`. Writes
bench/results/run_summary.md (+ .json) with the commit and date, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

from bench.common import git_commit, write_result

TASK_LINE = re.compile(r"(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task '([\w-]+)'|Task '([\w-]+)' finished)")


def _latest(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{root}: nothing matches {pattern} (has `make run` finished?)")
    return found[-1]


def stage_times(log_text: str) -> dict[str, float]:
    """Seconds per task name (summed over the agents' loop iterations) from kfp.local's log lines."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log_text)
    started: dict[str, datetime] = {}
    out: dict[str, float] = {}
    for m in TASK_LINE.finditer(plain):
        t = datetime.strptime(m.group(1)[:15], "%H:%M:%S.%f")
        if m.group(2):
            started[m.group(2)] = t
        elif m.group(3) in started:
            stage = re.sub(r"-\d+$", "", m.group(3))  # train-agent-2 … (one task per agent): train-agent
            out[stage] = out.get(stage, 0.0) + (t - started.pop(m.group(3))).total_seconds() % 86400
    return out


def time_v(log_text: str) -> dict:
    """Wall time (s) and peak RSS (MB) from the tail of `/usr/bin/time -v`."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", log_text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log_text)
    secs = None
    if wall:
        parts = [float(x) for x in wall.group(1).split(":")]
        secs = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {"wall_s": secs, "peak_rss_mb": int(rss.group(1)) / 1024 if rss else None}


def collect(root: Path, log: Path | None) -> dict:
    run = _latest(root / "outputs", "cmva-gs-*/evaluate/report/report.json").parents[2]
    report = json.loads((run / "evaluate" / "report" / "report.json").read_text())
    report.setdefault("selector_agreement", _agreement_from(run / "evaluate" / "report" / "generations.jsonl"))
    rewards = json.loads((run / "train-rewards" / "rewards" / "metrics.json").read_text())
    data_stats = run / "build-aggregator-data" / "data" / "stats.json"
    agents = {}
    old_layout = root.glob("outputs/cmva-gs-*/for-loop-*/train-agent/agent/summary.json")  # ParallelFor, before
    for s in [*old_layout, *root.glob("outputs/cmva-gs-*/train-agent*/agent/summary.json")]:
        summary = json.loads(s.read_text())
        agents[summary["value"]] = summary
    commit = git_commit(root)  # the checkout the run was made in (ROOT lies inside it), not this script's
    text = log.read_text(errors="replace") if log else ""
    return {
        "commit": commit,
        "run": run.name,
        "report": report,
        "rewards": rewards,
        "agents": agents,
        "aggregator_data": json.loads(data_stats.read_text()) if data_stats.exists() else {},
        "stages_s": stage_times(text),
        **time_v(text),
    }


def render(d: dict) -> str:
    from cmva.evaluate import rouge_lines

    r, rw = d["report"], d["rewards"]
    names = list(r["conformity"])
    lines = [f"Run `{d['run']}` (started {d['run'][8:18]}) at commit `{d['commit']}`.", ""]
    if d["wall_s"]:
        lines += [f"`make run` wall time {d['wall_s'] / 60:.1f} min, peak RSS {d['peak_rss_mb'] / 1024:.1f} GB.", ""]
    if d["stages_s"]:
        stages = ", ".join(f"{k} {v / 60:.1f}" for k, v in d["stages_s"].items())
        lines += [f"Stage minutes (kfp.local): {stages}; evaluation phases (s): {r.get('phases_s')}.", ""]
    lines += ["Reward classifiers, held-out SocialChem test actions:", ""]
    lines += [
        "| value | accuracy | F1 | acc. vs other foundations | MIC test replies acc. | ρ with length | "
        "second set's accuracy |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    second = rw.get("_second_set_accuracy", {})
    for v in names:
        m = rw[v]
        lines.append(
            f"| {v} | {m['accuracy']:.3f} | {m['f1']:.3f} | {m['vs_other_foundations']['accuracy']:.3f} | "
            f"{m['mic_test_replies']['accuracy']:.3f} (n={m['mic_test_replies']['n']}) | {m['length_spearman']:+.2f} | "
            f"{second.get(v, float('nan')):.3f} |"
        )
    corr = rw["_pairwise_correlation"]["max_pairwise"]
    lines += ["", f"Largest pairwise reward correlation on the test actions: {corr:.3f}.", ""]
    lines += ["ROUGE F1 against MIC's ground truth (paper Fig. 2).", "", *rouge_lines(r)]
    lines += ["", "Conformity of each agent to its value (paper Table 1), by the run's reward models:", ""]
    lines += ["| value | PT model | agent | Δ | Δ 95 % CI | gap to 1.0 closed | RL reward first → last | KL last |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for v in names:
        c, a = r["conformity"][v], d["agents"].get(v, {})
        lo, hi = c["delta_ci95"]
        lines.append(
            f"| {v} | {c['pt']:.3f} | {c['agent']:.3f} | {c['delta']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
            f"{c['gap_closed']:.0%} | {a.get('reward_first', float('nan')):.2f} → {a.get('reward_last', float('nan')):.2f} | "
            f"{a.get('kl_last', float('nan')):.2f} |"
        )
    from cmva.evaluate import looping_lines, selector_agreement_lines

    lines += ["", *looping_lines(r.get("looping"), heading=False)]
    spec, rc = r["specialisation"], r["reward_correlation"]
    lines += [
        f"Agent specialisation P[r_i(agent i) > r_i(agent j)], mean over i ≠ j: {spec['mean_off_diagonal']:.3f}; "
        f"largest pairwise reward correlation over the evaluation's answers: {rc['max_pairwise']:.3f}.",
        "",
        "Profile following (paired one-hot test; graded sensitivity centred per question), with shuffled-c controls:",
        "",
        "| system | paired win rate | 95 % CI | shuffled | graded Spearman | shuffled | answers |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += _following_rows(r["paired"], r["sensitivity"], counts=True)
    lines += selector_agreement_lines(r.get("selector_agreement"))
    return "\n".join(lines + _second_judge(r) + _data_lines(d.get("aggregator_data", {}))) + "\n"


def _agreement_from(generations: Path) -> dict | None:
    """`selector_agreement` for a report from before it was reported, recounted from its generations."""
    from cmva.evaluate import CMVA, SELECTOR
    from cmva.profile_metrics import same_opening

    if not generations.is_file():
        return None
    rows = [json.loads(line) for line in generations.open()]
    out = {}
    for kind, probe in (("paired", "paired"), ("graded", "sensitivity")):
        texts = {s: [g["text"] for g in rows if g["system"] == s and g.get("probe") == probe] for s in (CMVA, SELECTOR)}
        if not texts[SELECTOR] or len(texts[SELECTOR]) != len(texts[CMVA]):
            return None
        out[kind] = same_opening(texts[CMVA], texts[SELECTOR])
    return out


def _second_judge(r: dict) -> list[str]:
    second = r.get("second_judge")
    if not second:
        return []
    lines = ["", "The same answers judged by the second classifier set (it picked the aggregator's targets):", ""]
    lines += [
        "| system | paired win rate | 95 % CI | shuffled | graded Spearman | shuffled |",
        "|---|---|---|---|---|---|",
    ]
    return lines + _following_rows(second["paired"], second["sensitivity"], counts=False)


def _following_rows(paired: dict, sensitivity: dict, counts: bool) -> list[str]:
    """One table row per system: paired win rate, CI, shuffled; graded Spearman, shuffled (+ how many answers)."""
    rows = []
    for s, p in paired.items():
        g = sensitivity[s]
        row = (
            f"| {s} | {p['win_rate']:.3f} | [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] | {p['shuffled']:.3f} | "
            f"{g['mean_spearman']:.3f} | {g['shuffled']:.3f} |"
        )
        rows.append(row + (f" {p['comparisons']} pairs, {g['answers']} graded |" if counts else ""))
    return rows


def _data_lines(stats: dict) -> list[str]:
    if not stats:
        return []
    return [
        "",
        f"Aggregator data: {stats['rows']} rows over {stats['questions']} questions; "
        f"{stats['questions_with_2plus_targets']} questions have ≥ 2 different targets; "
        f"{stats['rows_showing_all_agents']} rows show all agents; targets by source {stats['target_sources']}"
        + _top_weight(stats)
        + ".",
    ]


def _top_weight(stats: dict) -> str:
    share = stats.get("graded_rows_target_top_weight")
    return "" if share is None else f"; graded rows whose target is the top-weighted agent's answer: {share:.0%}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/kfp/cpu", help="the local pipeline root of `make run`")
    p.add_argument("--log", help="the output of `/usr/bin/time -v make run`")
    a = p.parse_args()
    data = collect(Path(a.root), Path(a.log) if a.log else None)
    md = render(data)
    write_result("run_summary", data, md)
    print(md)


if __name__ == "__main__":
    main()
