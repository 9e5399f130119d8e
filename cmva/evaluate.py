"""Evaluation: ROUGE of CMVA-GS vs baselines (paper Fig. 2), agent conformity (Table 1), profile sensitivity.

Every number comes from real generations, all written to `generations.jsonl`.

    $ cmva evaluate --artifacts runs/cpu --out runs/cpu/eval                 # the run's MIC test split
    $ cmva evaluate --artifacts runs/cpu --data my_test.csv --out eval-mine  # any MIC-schema CSV
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cmva.config import EvalCfg
from cmva.values import MoralValue

log = logging.getLogger(__name__)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
CMVA = "cmva-gs"
SYSTEM_ORDER = (CMVA, "pt", "few-shot", "prompt-aggregation", "weighted-merge")


def rouge_table(predictions: Mapping[str, Sequence[str]], targets: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean ROUGE F1 (rouge-score, stemmed) of each system's predictions against the targets."""
    from rouge_score import rouge_scorer

    # rougeLsum wants one sentence per line; rouge-score's own splitter needs NLTK data that cannot be
    # downloaded here, so sentences are split on end punctuation.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out = {}
    for system, preds in predictions.items():
        scores = [scorer.score(_lines(t), _lines(p)) for t, p in zip(targets, preds, strict=True)]
        out[system] = {
            k: float(np.mean([s[k].fmeasure for s in scores])) if scores else float("nan") for k in ROUGE_KEYS
        }
    return out


def _lines(text: str) -> str:
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def random_profiles(values: Sequence[str], n: int, rng: random.Random) -> list[dict[str, float]]:
    """Profiles with weights in {0, 0.25, …, 1}, at least two distinct weights (so Spearman is defined)."""
    out = []
    while len(out) < n:
        p = {v: rng.choice((0.0, 0.25, 0.5, 0.75, 1.0)) for v in values}
        if len(set(p.values())) >= 2 and max(p.values()) > 0:
            out.append(p)
    return out


def evaluate(
    artifacts: str | Path,
    out_dir: str | Path,
    values: list[MoralValue],
    train_mic: str | Path,
    data: str | Path | None = None,
    cfg: EvalCfg | None = None,
) -> dict:
    """Run every system on the test rows and write generations.jsonl, report.json, report.md and plots.

    Args:
        artifacts: Local directory holding base/, rewards/, agents/<value>/, aggregator/.
        out_dir: Where the report goes.
        values: The run's moral values.
        train_mic: The MIC-schema file the run trained on (few-shot examples come from its train split).
        data: Any MIC-schema CSV to evaluate on (default: the test split of `train_mic`).
    """
    from cmva.aggregator import agent_answers, cmva_answers, profile_dict
    from cmva.baselines import few_shot_examples, few_shot_jobs, prompt_aggregation_jobs, pt_jobs, weighted_merge_jobs
    from cmva.data import load_mic
    from cmva.engine import BASE, Engine
    from cmva.rewards import RewardModel

    cfg = cfg or EvalCfg()
    t0 = time.time()
    art, out = Path(artifacts), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [v.name for v in values]
    test, report_load = load_mic(data or train_mic, values, split="test")
    if len(test) == 0:
        raise ValueError(f"{data or train_mic}: no test rows to evaluate")
    rows = list(test)[: cfg.max_rows] if cfg.max_rows else list(test)
    train_rows = list(load_mic(train_mic, values, split="train")[0])
    questions = [r["question"] for r in rows]
    profiles = [profile_dict(names, r["profile"]) for r in rows]

    adapters = {v: art / "agents" / v for v in names}
    adapters["aggregator"] = art / "aggregator"
    engine = Engine(art / "base", adapters)
    rewards = RewardModel.load(art / "rewards")
    phases: dict[str, float] = {}
    tick = time.time()

    def lap(name: str) -> None:
        nonlocal tick
        phases[name] = round(time.time() - tick, 1)
        tick = time.time()

    lap("load")

    # Phase 1, one mixed-adapter pass: every agent on every question, the PT model, the few-shot prompt.
    all_agents = agent_answers(
        engine, questions, [names] * len(rows), cfg.max_new_tokens, cfg.batch_size, progress="eval: agents"
    )
    lap("agents")
    examples = few_shot_examples(train_rows, values, cfg.fewshot_examples, cfg.seed)
    jobs = pt_jobs(questions) + few_shot_jobs(questions, profiles, values, examples)
    texts = engine.generate(
        [m for m, _ in jobs], [a for _, a in jobs], cfg.max_new_tokens, cfg.batch_size, progress="eval: baselines"
    )
    n = len(rows)
    preds: dict[str, list[str]] = {"pt": texts[:n], "few-shot": texts[n:]}
    lap("pt+few-shot")

    # Phase 2: systems that read the agents' answers, and the merged adapters.
    rng = random.Random(cfg.seed)
    sens_idx = list(range(min(cfg.sensitivity_questions, n)))
    sens_profiles = [(i, p) for i in sens_idx for p in random_profiles(names, cfg.sensitivity_profiles, rng)]
    agg_q = questions + [questions[i] for i, _ in sens_profiles]
    agg_p = profiles + [p for _, p in sens_profiles]
    agg_a = all_agents + [all_agents[i] for i, _ in sens_profiles]
    # A merge of one agent (weight 1) is that agent, of none the PT model: their answers are already here.
    merge_jobs = weighted_merge_jobs(engine, questions, profiles)
    merged = {
        i: preds["pt"][i] if a == BASE else all_agents[i][a]
        for i, (_, a) in enumerate(merge_jobs)
        if a in {BASE, *names}
    }
    todo = [i for i in range(n) if i not in merged]
    jobs = prompt_aggregation_jobs(agg_q, agg_p, agg_a) + [merge_jobs[i] for i in todo]
    texts = engine.generate(
        [m for m, _ in jobs],
        [a for _, a in jobs],
        cfg.max_new_tokens,
        cfg.batch_size,
        progress="eval: prompt-aggregation, merge",
    )
    m = len(agg_q)
    prompt_agg_all = texts[:m]
    merged.update(zip(todo, texts[m:], strict=True))
    preds["weighted-merge"] = [merged[i] for i in range(n)]
    preds["prompt-aggregation"] = prompt_agg_all[:n]
    lap("prompt-aggregation+merge")
    cmva_all = cmva_answers(
        engine, agg_q, agg_p, agg_a, cfg.max_new_tokens, batch_size=cfg.batch_size, progress="eval: CMVA-GS"
    )
    preds[CMVA] = cmva_all[:n]
    lap("cmva-gs")

    # ROUGE against MIC's ground truth (rows that have one).
    has_target = [i for i, r in enumerate(rows) if r["target"]]
    rouge = rouge_table(
        {s: [preds[s][i] for i in has_target] for s in SYSTEM_ORDER}, [rows[i]["target"] for i in has_target]
    )

    # Conformity (paper Table 1): each agent's answers vs the PT model's, scored by the value's reward model.
    pt_scores = rewards.score(preds["pt"])
    conformity = {}
    for v in names:
        agent_score = rewards.score([a[v] for a in all_agents])[v]
        conformity[v] = {"pt": float(np.mean(pt_scores[v])), "agent": float(np.mean(agent_score))}
        conformity[v]["delta"] = conformity[v]["agent"] - conformity[v]["pt"]

    # Profile sensitivity: does the answer's value profile follow the requested one?
    def sensitivity(answers: Sequence[str]) -> dict:
        scores = rewards.score(list(answers))
        rhos = [spearman(list(p.values()), [scores[v][k] for v in names]) for k, (_, p) in enumerate(sens_profiles)]
        ok = [r for r in rhos if not np.isnan(r)]
        return {"mean_spearman": float(np.mean(ok)) if ok else float("nan"), "n": len(ok)}

    sens = {CMVA: sensitivity(cmva_all[n:]), "prompt-aggregation": sensitivity(prompt_agg_all[n:])}

    system_value_scores = {s: {v: float(np.mean(x)) for v, x in rewards.score(preds[s]).items()} for s in SYSTEM_ORDER}
    with open(out / "generations.jsonl", "w") as f:
        for i, r in enumerate(rows):
            for s in SYSTEM_ORDER:
                f.write(
                    json.dumps({"row_id": r["id"], "system": s, "profile": profiles[i], "text": preds[s][i]}) + "\n"
                )
            for v in names:
                f.write(
                    json.dumps(
                        {"row_id": r["id"], "system": f"agent:{v}", "profile": profiles[i], "text": all_agents[i][v]}
                    )
                    + "\n"
                )
        for k, (i, p) in enumerate(sens_profiles):
            for s, texts_ in ((CMVA, cmva_all), ("prompt-aggregation", prompt_agg_all)):
                f.write(
                    json.dumps(
                        {
                            "row_id": rows[i]["id"],
                            "system": s,
                            "profile": p,
                            "text": texts_[n + k],
                            "probe": "sensitivity",
                        }
                    )
                    + "\n"
                )

    report = {
        "data": str(data or train_mic),
        "rows": n,
        "rows_with_target": len(has_target),
        "load": report_load.summary(),
        "rouge": rouge,
        "conformity": conformity,
        "sensitivity": sens,
        "value_scores": system_value_scores,
        "wall_s": round(time.time() - t0, 1),
        "phases_s": phases,
        "config": cfg.model_dump(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_rouge(rouge, out / "rouge.png")
    plot_conformity(conformity, out / "conformity.png")
    (out / "report.md").write_text(render_markdown(report))
    log.info("evaluation written to %s", out)
    return report


def render_markdown(report: dict) -> str:
    """The report as Markdown tables (what the Kubeflow dashboard and the README show)."""
    lines = [
        "# CMVA-GS evaluation",
        "",
        f"Data: `{report['data']}` — {report['rows']} rows, {report['rows_with_target']} with a ground-truth answer. "
        f"Wall time {report['wall_s']} s.",
        "",
        "## ROUGE F1 against MIC's ground truth (paper Fig. 2)",
        "",
        "| system | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum |",
        "|---|---|---|---|---|",
    ]
    for s, r in report["rouge"].items():
        lines.append(f"| {s} | " + " | ".join(f"{r[k]:.4f}" for k in ROUGE_KEYS) + " |")
    lines += ["", "![ROUGE](rouge.png)", "", "## Agent conformity to its value vs the PT model (paper Table 1)", ""]
    lines += ["| value | PT model | moral agent | Δ |", "|---|---|---|---|"]
    for v, c in report["conformity"].items():
        lines.append(f"| {v} | {c['pt']:.4f} | {c['agent']:.4f} | {c['delta']:+.4f} |")
    lines += ["", "![conformity](conformity.png)", "", "## Profile sensitivity", ""]
    lines += ["Mean Spearman correlation between the requested profile and the answer's value scores:", ""]
    lines += ["| system | mean Spearman | answers |", "|---|---|---|"]
    for s, d in report["sensitivity"].items():
        lines.append(f"| {s} | {d['mean_spearman']:.4f} | {d['n']} |")
    return "\n".join(lines) + "\n"


def plot_rouge(rouge: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(rouge)
    x = np.arange(len(ROUGE_KEYS))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    for i, s in enumerate(systems):
        ax.bar(x + i * width, [rouge[s][k] for k in ROUGE_KEYS], width, label=s)
    ax.set_xticks(x + 0.4 - width / 2, ["ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum"])
    ax.set_ylabel("F1"), ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
    ax.set_title("CMVA-GS vs baselines (MIC ground truth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_conformity(conformity: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = list(conformity)
    x = np.arange(len(vals))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(x - 0.2, [conformity[v]["pt"] for v in vals], 0.4, label="PT model")
    ax.bar(x + 0.2, [conformity[v]["agent"] for v in vals], 0.4, label="moral agent")
    ax.set_xticks(x, vals), ax.set_ylabel("mean reward (P follows value)"), ax.set_ylim(0, 1)
    ax.legend(), ax.grid(axis="y", alpha=0.3), ax.set_title("Conformity of each agent to its value")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
