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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmva.aggregator_data import graded_profiles, onehot
from cmva.config import EvalCfg
from cmva.plots import plot_conformity, plot_profile_following, plot_rouge, plot_specialisation
from cmva.profile_metrics import bootstrap_ci, paired_delta, paired_win_rate, same_opening, sensitivity
from cmva.reward_diagnostics import conformity, length_correlation, reward_correlation, specialisation
from cmva.text_metrics import looping_share
from cmva.values import MoralValue

log = logging.getLogger(__name__)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
CMVA = "cmva-gs"
SYSTEM_ORDER = (CMVA, "pt", "few-shot", "prompt-aggregation", "weighted-merge")
SELECTOR = "target-rule selector"  # profile following only: the agent answer the aggregator's target rule picks


def rouge_scores(predictions: Mapping[str, Sequence[str]], targets: Sequence[str]) -> dict[str, dict[str, list]]:
    """Per-row ROUGE F1 (rouge-score, stemmed) of each system's predictions against the targets."""
    from rouge_score import rouge_scorer

    # rougeLsum wants one sentence per line; rouge-score's own splitter needs NLTK data that cannot be
    # downloaded here, so sentences are split on end punctuation.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out = {}
    for system, preds in predictions.items():
        scores = [scorer.score(_lines(t), _lines(p)) for t, p in zip(targets, preds, strict=True)]
        out[system] = {k: [s[k].fmeasure for s in scores] for k in ROUGE_KEYS}
    return out


def rouge_table(predictions: Mapping[str, Sequence[str]], targets: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean ROUGE F1 of each system's predictions against the targets."""
    return {
        s: {k: float(np.mean(x)) if x else float("nan") for k, x in d.items()}
        for s, d in rouge_scores(predictions, targets).items()
    }


def _lines(text: str) -> str:
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


@dataclass
class Generations:
    """Every text the evaluation generated: per test row, per graded probe, per one-hot (paired) probe."""

    questions: list[str]
    profiles: list[dict[str, float]]
    agents: list[dict[str, str]]  # every agent's answer to every test question
    preds: dict[str, list[str]]  # system -> one answer per test row
    probes: list[tuple[int, dict[str, float]]]  # graded profiles (sensitivity)
    probe_preds: dict[str, list[str]]  # system -> one answer per probe
    paired: list[tuple[int, str]]  # one-hot profiles e_v (paired test): (row index, v)
    paired_preds: dict[str, list[str]]  # system -> one answer per paired probe
    merged_multi: int  # merged adapters built from ≥ 2 agents
    phases: dict[str, float] = field(default_factory=dict)


def evaluate(
    artifacts: str | Path,
    out_dir: str | Path,
    values: list[MoralValue],
    train_mic: str | Path,
    data: str | Path | None = None,
    cfg: EvalCfg | None = None,
    skip_zero_weight: bool = True,
    goodness_weight: float = 1.0,
    dtype: str = "float32",
) -> dict:
    """Run every system on the test rows and write generations.jsonl, report.json, report.md and plots.

    Args:
        artifacts: Local directory holding base/, rewards/, agents/<value>/, aggregator/.
        out_dir: Where the report goes.
        values: The run's moral values.
        train_mic: The MIC-schema file the run trained on (few-shot examples come from its train split).
        data: Any MIC-schema CSV to evaluate on (default: the test split of `train_mic`).
        cfg: Evaluation settings (the recipe's `evaluate` section).
        skip_zero_weight: The run's aggregator setting: agents with c_i = 0 left out of the aggregator's input.
        goodness_weight: The run's aggregator target rule (`cmva.aggregator_data.target_scores`), for the selector
            of an aggregator saved without its ranking (`ranking.json`, `cmva.ranking`).
        dtype: The run's `base.dtype` (`cmva.models.load_dtype`: float32 on a CPU).
    """
    from cmva.data import load_mic
    from cmva.engine import Engine
    from cmva.ranking import AnswerRanker
    from cmva.rewards import SECOND_DIR, RewardModel

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
    adapters = {v: art / "agents" / v for v in names}
    adapters["aggregator"] = art / "aggregator"
    engine = Engine(art / "base", adapters, dtype=cfg.dtype or dtype, exact_dtype=cfg.dtype is not None)
    rewards = RewardModel.load(art / "rewards")
    second = _load_second(art / "rewards")
    # the order CMVA-GS reads the answers in, scored by the second set loaded above
    ranker = AnswerRanker.load(art / "aggregator", art / "rewards", {SECOND_DIR: second} if second else None)
    load_s = round(time.time() - t0, 1)

    gens = generate(engine, rows, train_rows, values, cfg, skip_zero_weight, ranker)
    gens.phases = {"load": load_s, **gens.phases}
    if second is not None:
        ranker = ranker or _fit_ranker(second, gens, goodness_weight)
        _add_selector(gens, ranker, skip_zero_weight)
    report = {
        "data": str(data or train_mic),
        "rows": len(rows),
        "rows_with_target": sum(bool(r["target"]) for r in rows),
        "load": report_load.summary(),
        **score(gens, rows, rewards, names),
        **_second_judge(gens, second),
        **_selector_agreement(gens),
        "merges": {"profiles_with_2plus_agents": gens.merged_multi},
        "engine_batches": dict(engine.path_counts),  # which generation paths ran (fused mixed, peft mixed, …)
        "generation_dtype": engine.dtype,  # `evaluate.dtype`, else the base's own on a CPU (cmva.decoding)
        "wall_s": round(time.time() - t0, 1),
        "phases_s": gens.phases,
        "config": {**cfg.model_dump(), "skip_zero_weight": skip_zero_weight},
    }
    write_report(out, report, gens, rows, names)
    log.info("evaluation written to %s", out)
    return report


def generate(engine, rows, train_rows, values: Sequence[MoralValue], cfg: EvalCfg, skip_zero_weight: bool, ranker=None):
    """Every system's answers: test rows (ROUGE, conformity) and sensitivity probes (graded profiles).
    `ranker`: the order in which CMVA-GS reads the agents' answers (the aggregator's own, `cmva.ranking`)."""
    from cmva.aggregator import agent_answers, cmva_answers, profile_dict
    from cmva.baselines import few_shot_examples, few_shot_jobs, prompt_aggregation_jobs, pt_jobs

    names = [v.name for v in values]
    questions = [r["question"] for r in rows]
    profiles = [profile_dict(names, r["profile"]) for r in rows]
    n, gen_kw = len(rows), dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    phases: dict[str, float] = {}
    tick = time.time()

    def lap(name: str) -> None:
        nonlocal tick
        phases[name] = round(time.time() - tick, 1)
        tick = time.time()

    # Phase 1, one mixed-adapter pass: every agent on every question; then the PT model and the few-shot prompt.
    all_agents = agent_answers(engine, questions, [names] * n, progress="eval: agents", **gen_kw)
    lap("agents")
    examples = few_shot_examples(train_rows, values, cfg.fewshot_examples, cfg.seed)
    jobs = pt_jobs(questions) + few_shot_jobs(questions, profiles, values, examples)
    texts = engine.generate([m for m, _ in jobs], [a for _, a in jobs], progress="eval: baselines", **gen_kw)
    preds: dict[str, list[str]] = {"pt": texts[:n], "few-shot": texts[n:]}
    lap("pt+few-shot")

    # Phase 2: systems that read the agents' answers or merge their adapters, on test rows + probes.
    probes, paired = _probes(names, n, cfg)
    b = len(probes) if cfg.baseline_probes is None else min(cfg.baseline_probes, len(probes))
    onehots = [(i, onehot(names, v)) for i, v in paired]
    extra = {CMVA: probes + onehots, "baselines": probes[:b] + onehots}  # baselines: the first b graded probes
    inputs = {
        k: (
            questions + [questions[i] for i, _ in e],
            profiles + [p for _, p in e],
            all_agents + [all_agents[i] for i, _ in e],
        )
        for k, e in extra.items()
    }
    bq, bp, ba = inputs["baselines"]
    merged, merged_multi = weighted_merge(
        engine, bq, bp, ba, preds["pt"] + [preds["pt"][i] for i, _ in extra["baselines"]], gen_kw
    )
    pa_jobs = prompt_aggregation_jobs(bq, bp, ba, skip_zero_weight)
    prompt_agg = engine.generate(
        [m for m, _ in pa_jobs], [a for _, a in pa_jobs], progress="eval: prompt-aggregation", **gen_kw
    )
    lap("prompt-aggregation+merge")
    cmva_all = cmva_answers(
        engine, *inputs[CMVA], skip_zero_weight=skip_zero_weight, progress="eval: CMVA-GS", ranker=ranker, **gen_kw
    )
    lap("cmva-gs")
    both = {CMVA: cmva_all, "prompt-aggregation": prompt_agg, "weighted-merge": merged}
    preds.update({s: t[:n] for s, t in both.items()})
    n_probes = {CMVA: len(probes), "prompt-aggregation": b, "weighted-merge": b}
    return Generations(
        questions,
        profiles,
        all_agents,
        preds,
        probes,
        {s: t[n : n + n_probes[s]] for s, t in both.items()},
        paired,
        {s: t[n + n_probes[s] :] for s, t in both.items()},
        merged_multi,
        phases,
    )


def _probes(names: Sequence[str], n: int, cfg: EvalCfg):
    """Graded probes (question index, all-positive profile) — the aggregator's training distribution — and
    paired one-hot probes (question index, value)."""
    rng = random.Random(cfg.seed)
    graded = [
        (i, p)
        for i in range(min(cfg.sensitivity_questions, n))
        for p in graded_profiles(names, cfg.sensitivity_profiles, rng)
    ]
    return graded, [(i, v) for i in range(min(cfg.paired_questions, n)) for v in names]


def _load_second(rewards_dir: Path):
    """The second classifier set (it picked the aggregator's targets), or None for a run from before it."""
    from cmva.rewards import SECOND_DIR, RewardModel

    return RewardModel.load(rewards_dir / SECOND_DIR) if (rewards_dir / SECOND_DIR).exists() else None


def _fit_ranker(second, gens: Generations, goodness_weight: float):
    """For an aggregator saved without `ranking.json`: the target rule's statistics from the agents' answers here."""
    from cmva.ranking import AnswerRanker

    texts = [t for a in gens.agents for t in a.values()]
    return AnswerRanker.fit(second, second.score(texts), goodness_weight)


def _add_selector(gens: Generations, ranker, skip_zero_weight: bool) -> None:
    """The aggregator's target rule applied to the agents' answers on every probe (the answer its ranking lists
    first): the ceiling of what the aggregator can learn from its data, judged like every other system."""
    from cmva.aggregator_data import select_answers

    paired = [(i, onehot(list(gens.agents[i]), v)) for i, v in gens.paired]
    gens.probe_preds[SELECTOR] = select_answers(gens.agents, gens.probes, ranker, skip_zero_weight)
    gens.paired_preds[SELECTOR] = select_answers(gens.agents, paired, ranker, skip_zero_weight)


def _selector_agreement(gens: Generations) -> dict:
    """How often CMVA-GS answers with the answer its ranking lists first (the selector's): same first 12 words."""
    if SELECTOR not in gens.paired_preds:
        return {}
    both = {"paired": (gens.paired_preds, len(gens.paired)), "graded": (gens.probe_preds, len(gens.probes))}
    return {"selector_agreement": {k: same_opening(p[CMVA][:n], p[SELECTOR][:n]) for k, (p, n) in both.items()}}


def _second_judge(gens: Generations, second) -> dict:
    """Profile following judged by the second classifier set (the one that picked the aggregator's targets)."""
    if second is None:
        return {}
    paired, sens = profile_following(gens, second)
    return {"second_judge": {"paired": paired, "sensitivity": sens}}


def weighted_merge(engine, questions, profiles, agents, pt_answers, gen_kw) -> tuple[list[str], int]:
    """Answers of the agents' adapters merged with weights c / Σc. A merge of one agent (weight 1) is that agent,
    of none the PT model: those answers are reused. Returns (answers, merged adapters built from ≥ 2 agents)."""
    from cmva.baselines import weighted_merge_jobs
    from cmva.engine import BASE

    jobs = weighted_merge_jobs(engine, questions, profiles)
    known = {
        i: pt_answers[i] if a == BASE else agents[i][a] for i, (_, a) in enumerate(jobs) if a == BASE or a in agents[i]
    }
    todo = [i for i in range(len(jobs)) if i not in known]
    texts = engine.generate([jobs[i][0] for i in todo], [jobs[i][1] for i in todo], progress="eval: merge", **gen_kw)
    known.update(zip(todo, texts, strict=True))
    return [known[i] for i in range(len(jobs))], len({jobs[i][1] for i in todo})


def profile_following(gens: Generations, judge) -> tuple[dict, dict]:
    """Paired one-hot win rates and graded sensitivity of each system, judged by one classifier set."""
    probe_profiles, groups = [p for _, p in gens.probes], [i for i, _ in gens.probes]
    sens = {
        s: sensitivity(probe_profiles[: len(t)], judge.score(t), groups[: len(t)]) for s, t in gens.probe_preds.items()
    }
    asked, pgroups = [v for _, v in gens.paired], [i for i, _ in gens.paired]
    paired = {s: paired_win_rate(judge.score(t), asked, pgroups) for s, t in gens.paired_preds.items()}
    return paired, sens


def score(gens: Generations, rows, rewards, names: Sequence[str]) -> dict:
    """ROUGE against MIC's ground truth, agent conformity (paper Table 1), profile sensitivity, value scores."""
    has_target = [i for i, r in enumerate(rows) if r["target"]]
    per_row = rouge_scores(
        {s: [gens.preds[s][i] for i in has_target] for s in SYSTEM_ORDER}, [rows[i]["target"] for i in has_target]
    )
    rouge = {s: {k: float(np.mean(x)) if x else float("nan") for k, x in d.items()} for s, d in per_row.items()}
    rouge_ci = {s: {k: bootstrap_ci(x) for k, x in d.items()} for s, d in per_row.items()}
    ours = per_row[CMVA]["rougeL"]
    rouge_delta = {s: paired_delta(ours, d["rougeL"]) for s, d in per_row.items() if s != CMVA} if ours else {}
    sys_scores = {s: rewards.score(gens.preds[s]) for s in SYSTEM_ORDER}
    agent_scores = {j: rewards.score([a[j] for a in gens.agents]) for j in names}  # agent j → {value i → r_i}
    pool_texts = [t for s in SYSTEM_ORDER for t in gens.preds[s]] + [a[j] for j in names for a in gens.agents]
    pool = {v: [x for d in (*sys_scores.values(), *agent_scores.values()) for x in d[v]] for v in names}
    paired, sens = profile_following(gens, rewards)
    return {
        "rouge": rouge,
        "rouge_ci95": rouge_ci,
        "rougeL_delta": rouge_delta,  # CMVA-GS − each system, per row with a ground truth (paired bootstrap CI)
        "conformity": conformity(sys_scores["pt"], {v: agent_scores[v][v] for v in names}),
        "specialisation": specialisation(agent_scores),
        "reward_correlation": reward_correlation(pool),
        "length_spearman": length_correlation(pool, pool_texts),
        "paired": paired,
        "sensitivity": sens,
        "value_scores": {s: {v: float(np.mean(x)) for v, x in d.items()} for s, d in sys_scores.items()},
        "looping": looping(gens, names),
    }


def looping(gens: Generations, names: Sequence[str]) -> dict[str, float]:
    """Per system and per agent (`agent:<value>`): share of its test answers that repeat one of their own word
    4-grams, a failure no reward model penalises (cmva.text_metrics)."""
    out = {s: looping_share(gens.preds[s]) for s in SYSTEM_ORDER}
    return out | {f"agent:{v}": looping_share([a[v] for a in gens.agents]) for v in names}


def write_report(out: Path, report: dict, gens: Generations, rows, names: Sequence[str]) -> None:
    """generations.jsonl (every text the numbers come from), report.json, report.md and the plots."""
    with open(out / "generations.jsonl", "w") as f:
        for i, r in enumerate(rows):
            texts = {s: gens.preds[s][i] for s in SYSTEM_ORDER} | {f"agent:{v}": gens.agents[i][v] for v in names}
            for s, text in texts.items():
                f.write(json.dumps({"row_id": r["id"], "system": s, "profile": gens.profiles[i], "text": text}) + "\n")
        for k, (i, p) in enumerate(gens.probes):
            for s, texts_ in gens.probe_preds.items():
                if k >= len(texts_):  # baselines answer the first `baseline_probes` probes only
                    continue
                rec = {"row_id": rows[i]["id"], "system": s, "profile": p, "text": texts_[k], "probe": "sensitivity"}
                f.write(json.dumps(rec) + "\n")
        for k, (i, v) in enumerate(gens.paired):
            onehot = {u: float(u == v) for u in names}
            for s, texts_ in gens.paired_preds.items():
                rec = {"row_id": rows[i]["id"], "system": s, "profile": onehot, "text": texts_[k], "probe": "paired"}
                f.write(json.dumps(rec) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_rouge(report["rouge"], out / "rouge.png")
    plot_conformity(report["conformity"], out / "conformity.png")
    plot_profile_following(report["paired"], out / "profile_following.png")
    plot_specialisation(report["specialisation"]["matrix"], out / "specialisation.png")
    (out / "report.md").write_text(render_markdown(report))


def looping_lines(loops: dict[str, float] | None, heading: bool = True) -> list[str]:
    """Share of each system's and agent's test answers that loop (repeat one of their own word 4-grams);
    `heading`: with the section's heading (report.md) or without (a table in someone else's section)."""
    if not loops:
        return []
    lines = ["## Answers that loop", ""] if heading else []
    lines += ["Share of the test answers that repeat one of their own word 4-grams.", ""]
    lines += ["| system or agent | answers that loop |", "|---|---|"]
    return lines + [f"| {s} | {x:.0%} |" for s, x in loops.items()] + [""]


def _yardstick_markdown(report: dict) -> list[str]:
    """Agent specialisation, reward correlation and length correlation: can the numbers above be trusted?"""
    if "specialisation" not in report:
        return []
    spec, corr, length = report["specialisation"], report["reward_correlation"], report["length_spearman"]
    names = list(spec["matrix"])
    lines = [
        "## Agent specialisation and the reward models",
        "",
        "S[i][j] = P[r_i(answer of agent i) > r_i(answer of agent j)] over the test questions (ties 1/2): how much",
        f"more agent i follows value i than the other agents do. Mean off the diagonal: {spec['mean_off_diagonal']:.3f}.",
        "",
        "| agent i \\ agent j | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i in names:
        cells = ["—" if spec["matrix"][i][j] is None else f"{spec['matrix'][i][j]:.2f}" for j in names]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += ["", "![specialisation](specialisation.png)", ""]
    lines += [
        f"Largest correlation between two rewards over the evaluation's answers: {corr['max_pairwise']:.3f} "
        "(near 1: the classifiers measure one thing, not distinct values).",
        "",
        "| value | " + " | ".join(names) + " | Spearman with length (words) |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for u in names:
        row = " | ".join(f"{corr['matrix'][u][v]:.2f}" for v in names)
        lines.append(f"| {u} | {row} | {length.get(u, float('nan')):+.2f} |")
    return lines + [""]


def _dtype(report: dict) -> str | None:
    return report.get("generation_dtype") or report.get("config", {}).get("dtype")


def rouge_lines(report: dict) -> list[str]:
    """The ROUGE table: each system's F1, its ROUGE-L CI, and CMVA-GS's paired ROUGE-L difference to it."""
    ci, delta = report.get("rouge_ci95", {}), report.get("rougeL_delta", {})
    lines = [
        "ROUGE-L 95 % CI: bootstrap over the rows; CMVA-GS − system: the paired difference of ROUGE-L on the same rows,",
        "with its bootstrap 95 % CI (a CI that contains 0: the two are not told apart on this split).",
        "",
        "| system | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | ROUGE-L 95 % CI | CMVA-GS − system, ROUGE-L |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, r in report["rouge"].items():
        lo, hi = ci.get(s, {}).get("rougeL", [float("nan")] * 2)
        d = delta.get(s)
        diff = f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "—"
        cells = " | ".join(f"{r[k]:.4f}" for k in ROUGE_KEYS)
        lines.append(f"| {s} | {cells} | [{lo:.4f}, {hi:.4f}] | {diff} |")
    return lines


def render_markdown(report: dict) -> str:
    """The report as Markdown tables (what the Kubeflow dashboard and the README show)."""
    lines = [
        "# CMVA-GS evaluation",
        "",
        f"Data: `{report['data']}` — {report['rows']} rows, {report['rows_with_target']} with a ground-truth answer. "
        f"Wall time {report['wall_s']} s."
        + (f" Every system generated in {_dtype(report)}." if _dtype(report) else ""),
        "",
        "## ROUGE F1 against MIC's ground truth (paper Fig. 2)",
        "",
        *rouge_lines(report),
    ]
    lines += ["", "![ROUGE](rouge.png)", "", "## Agent conformity to its value vs the PT model (paper Table 1)", ""]
    lines += [
        "| value | PT model | moral agent | Δ | Δ 95 % CI | share of the gap to 1.0 closed |",
        "|---|---|---|---|---|---|",
    ]
    for v, c in report["conformity"].items():
        lo, hi = c.get("delta_ci95", [float("nan")] * 2)
        lines.append(
            f"| {v} | {c['pt']:.4f} | {c['agent']:.4f} | {c['delta']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | "
            f"{c.get('gap_closed', float('nan')):.0%} |"
        )
    lines += ["", "![conformity](conformity.png)", ""]
    lines += looping_lines(report.get("looping"))
    lines += _yardstick_markdown(report)
    lines += ["## Profile following: paired one-hot test", ""]
    lines += [
        "Each question answered under one-hot profiles e_i and e_j: win rate P[r_i(answer | e_i) > r_i(answer | e_j)]",
        "over every (question, i ≠ j), ties 1/2; 95 % CI by bootstrap over questions; shuffled: the same with the",
        "profiles permuted within a question (≈ 0.5 when nothing follows the profile).",
        "",
        "| system | win rate | 95 % CI | shuffled | questions | comparisons |",
        "|---|---|---|---|---|---|",
    ]
    for s, d in report.get("paired", {}).items():
        lo, hi = d["ci95"]
        lines.append(
            f"| {s} | {d['win_rate']:.3f} | [{lo:.3f}, {hi:.3f}] | {d['shuffled']:.3f} | {d['questions']} | "
            f"{d['comparisons']} |"
        )
    lines += ["", "![profile following](profile_following.png)", "", "## Profile sensitivity (graded profiles)", ""]
    lines += [
        "Mean Spearman correlation between the requested profile (graded, every weight positive: the aggregator's",
        "training distribution; baselines answer the first probes only) and the answer's",
        "value scores, each centred per value over the answers to the same question (so the classifiers' base",
        "rates do not set the ranking; earlier reports used the raw scores); shuffled: profiles permuted across",
        "answers. `target-rule selector` (both tables) is no system: it is the agent answer the aggregator's",
        "training rule picks for that profile (second classifier set) — the ceiling of what its data teaches.",
        "",
        "| system | mean Spearman | shuffled | answers (with a defined Spearman) |",
        "|---|---|---|---|",
    ]
    for s, d in report["sensitivity"].items():
        lines.append(
            f"| {s} | {d['mean_spearman']:.4f} | {d.get('shuffled', float('nan')):.4f} | "
            f"{d.get('answers', d['n'])} ({d['n']}) |"
        )
    lines += selector_agreement_lines(report.get("selector_agreement"))
    return "\n".join(lines + _second_judge_markdown(report)) + "\n"


def selector_agreement_lines(agree: dict | None) -> list[str]:
    """The report's sentence on how often CMVA-GS answers with the selector's answer (none before it was reported)."""
    if not agree:
        return []
    return [
        "",
        f"CMVA-GS answers with the answer its ranking lists first (the selector's; same first 12 words) in "
        f"{agree['paired']:.0%} of the paired probes and {agree['graded']:.0%} of the graded ones.",
    ]


def _second_judge_markdown(report: dict) -> list[str]:
    """The same profile-following figures judged by the second classifier set (it picked the training targets)."""
    second = report.get("second_judge")
    if not second:
        return []
    lines = [
        "",
        "## Profile following judged by the second classifier set",
        "",
        "The second set (the encoder as shipped + logistic heads) picked the aggregator's training targets; the",
        "figures above come from the fine-tuned set, which did not. Here the same answers, judged by the second set.",
        "",
        "| system | paired win rate | 95 % CI | shuffled | graded Spearman | shuffled |",
        "|---|---|---|---|---|---|",
    ]
    for s, d in second["paired"].items():
        g = second["sensitivity"].get(s, {})
        lo, hi = d["ci95"]
        lines.append(
            f"| {s} | {d['win_rate']:.3f} | [{lo:.3f}, {hi:.3f}] | {d['shuffled']:.3f} | "
            f"{g.get('mean_spearman', float('nan')):.4f} | {g.get('shuffled', float('nan')):.4f} |"
        )
    return lines
