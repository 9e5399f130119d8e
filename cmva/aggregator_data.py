"""Aggregator training data in which the profile c matters: the paper's goal π*(c) = argmax_y E[c·r(y)].

For each MIC training question (up to `AggregatorCfg.max_rows`):
- candidates: every agent's answer (one mixed-adapter pass) and MIC's ground-truth answer;
- profiles: the MIC row's own c (so ROUGE against MIC still trains), `onehot_profiles` one-hot ones (a value
  drawn at random) and `graded_profiles` graded, all-positive ones (`graded_profiles()`, also the evaluation's
  sensitivity probes);
- shown answers: the agents with c_i > 0 (`skip_zero_weight`, as in serving); in a share `drop_rate` of the rows
  one more shown answer is dropped at random, independently of c (a degraded agent in serving), never the last;
- target for c: among the shown answers and MIC's answer, the one with the highest normalised c·r(y) —
  c / Σc times rewards z-scored per value over all candidates (so no value wins by its base rate), its
  profile-independent part (mean z, general goodness) weighted by `goodness_weight` — with
  MIC's answer taking near-ties (within `mic_tie_margin`). The rewards come from the second classifier set
  (`cmva.rewards.SECOND_DIR`), so the evaluation's judge is not the training signal read back;
- order: the shown answers ranked by the same rule (`cmva.ranking`, its statistics saved beside the data as
  `ranking.json` and later with the adapter), so where the target is an agent's answer it is listed first.

Example:
    >>> choose_target({"care": 1.0, "loyalty": 0.0}, {"care": [0.5, -1.0], "loyalty": [0.0, 2.0]}, ["a", "b"], 0.1)
    0
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cmva.config import AggregatorCfg
from cmva.prompts import active_values, aggregator_messages

log = logging.getLogger(__name__)

DATA_FILE = "aggregator_data.jsonl"
MIC = "mic"  # the candidate that is MIC's ground-truth answer
GRID = (0.25, 0.5, 0.75, 1.0)


def graded_profiles(values: Sequence[str], n: int, rng: random.Random) -> list[dict[str, float]]:
    """`n` graded profiles: every weight positive, from {0.25, 0.5, 0.75, 1}, at least two distinct weights
    (so a rank correlation with c is defined and every agent is shown)."""
    out: list[dict[str, float]] = []
    while len(out) < n:
        p = {v: rng.choice(GRID) for v in values}
        if len(set(p.values())) >= 2:
            out.append(p)
    return out


def onehot(values: Sequence[str], v: str) -> dict[str, float]:
    return {u: float(u == v) for u in values}


def row_profiles(mic_profile: Mapping[str, float], values: Sequence[str], cfg: AggregatorCfg, rng: random.Random):
    """The profiles one training question is asked under: MIC's own, one-hot, graded."""
    hot = [onehot(values, rng.choice(list(values))) for _ in range(cfg.onehot_profiles)]
    return [dict(mic_profile), *hot, *graded_profiles(values, cfg.graded_profiles, rng)]


def shown_values(profile: Mapping[str, float], cfg: AggregatorCfg, rng: random.Random) -> list[str]:
    """The agents whose answers the row shows: c_i > 0 (if skipping), then one dropped at random in a share
    `drop_rate` of the rows, decided before and apart from c (so presence does not tell c)."""
    drop = rng.random() < cfg.drop_rate
    shown = active_values(profile, cfg.skip_zero_weight)
    if drop and len(shown) > 1:
        shown.remove(rng.choice(shown))
    return shown


def target_scores(profile: Mapping[str, float], z: Mapping[str, Sequence[float]], goodness_weight: float = 1.0):
    """Each candidate's (c / Σc)·z(y), split as Σ(c_i − c̄)z_i / Σc + goodness_weight · mean_i z_i.

    With `goodness_weight` 1 this is the paper's normalised c·r(y); below 1 it leans on the part of c·r(y) that
    changes with c (the mean term, general goodness, ranks candidates alike for every profile).
    """
    total = sum(profile.values()) or 1.0
    mean_c = total / len(profile)
    specific = sum(((w - mean_c) / total) * np.asarray(z[v], dtype=float) for v, w in profile.items())
    goodness = np.mean([np.asarray(z[v], dtype=float) for v in profile], axis=0)
    return specific + goodness_weight * goodness


def choose_target(
    profile: Mapping[str, float],
    z: Mapping[str, Sequence[float]],
    labels: Sequence[str],
    mic_tie_margin: float,
    goodness_weight: float = 1.0,
) -> int:
    """Index of the candidate with the best `target_scores`; MIC's answer (label `mic`) wins within the margin.

    Args:
        profile: c.
        z: value → standardised reward of each candidate.
        labels: each candidate's source (an agent's value, or `mic`).
        goodness_weight: weight of general goodness (mean z) beside the c-specific part; 1 = (c / Σc)·z.
    """
    j = target_scores(profile, z, goodness_weight)
    best = int(np.argmax(j))
    if MIC in labels:
        k = labels.index(MIC)
        if j[k] >= j[best] - mic_tie_margin:
            return k
    return best


def select_answers(
    agent_outputs: Sequence[Mapping[str, str]],
    probes: Sequence[tuple[int, Mapping[str, float]]],
    ranker,
    skip_zero_weight: bool = True,
) -> list[str]:
    """The target rule as a system: per probe (question index, c), the shown agent answer that `ranker`
    (`cmva.ranking.AnswerRanker`, the aggregator's) lists first. What the aggregator is trained to imitate where
    its target is an agent's answer, so the ceiling of its profile following."""
    if not probes:
        return []
    shown = [
        {v: agent_outputs[i][v] for v in active_values(p, skip_zero_weight) if v in agent_outputs[i]} for i, p in probes
    ]
    orders = ranker.order([p for _, p in probes], shown)
    return [s[o[0]] if o else "" for s, o in zip(shown, orders, strict=True)]


def build_aggregator_data(
    engine,
    rewards,
    mic_rows: Sequence[Mapping],
    values: Sequence[str],
    out_dir: str | Path,
    cfg: AggregatorCfg,
    seed: int = 0,
    rewards_name: str = "second",
) -> Path:
    """Every agent's answer to each MIC training question; rows (question, c, shown answers) → target.

    Args:
        engine: `cmva.engine.Engine` with the agents' adapters.
        rewards: The classifier set that picks targets (`RewardModel`, the second set in a run).
        rewards_name: its directory under the run's `rewards/`, recorded in `ranking.json`.
    """
    from cmva.aggregator import agent_answers, profile_dict
    from cmva.ranking import AnswerRanker

    rows = [r for r in mic_rows if r["target"]]
    rows = rows[: cfg.max_rows] if cfg.max_rows else rows
    if not rows:
        raise ValueError("no MIC training rows with a target answer")
    answers = agent_answers(
        engine,
        [r["question"] for r in rows],
        [list(values)] * len(rows),
        cfg.agent_max_new_tokens,
        progress="agent answers",
    )
    cands = [[*(a[v] for v in values), r["target"]] for r, a in zip(rows, answers, strict=True)]
    flat = rewards.score([t for c in cands for t in c])
    ranker = AnswerRanker.fit(rewards, flat, cfg.goodness_weight)
    z = ranker.z(flat)
    k = len(values) + 1
    rng = random.Random(seed)
    records = []
    for qi, (r, a) in enumerate(zip(rows, answers, strict=True)):
        zq = {v: z[v][qi * k : (qi + 1) * k] for v in values}
        for j, p in enumerate(row_profiles(profile_dict(values, r["profile"]), values, cfg, rng)):
            with_mic = cfg.mic_candidate == "all" or j == 0  # row_profiles lists MIC's own profile first
            records.append(_record(r, p, a, zq, values, cfg, rng, ranker, with_mic))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranker.save(out, rewards_name)
    with open(out / DATA_FILE, "w") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in records)
    stats = data_stats(records, values)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("aggregator data: %s", stats)
    return out / DATA_FILE


def _record(row, profile, answers, zq, values, cfg, rng, ranker, with_mic: bool = True) -> dict:
    shown = shown_values(profile, cfg, rng)
    agents = [v for v in shown if answers[v].strip()]  # an empty answer is shown, never a target
    labels = [*agents, MIC] if with_mic or not agents else agents
    idx = [values.index(v) if v != MIC else len(values) for v in labels]
    zc = {v: [zq[v][i] for i in idx] for v in values}
    target_k = choose_target(profile, zc, labels, cfg.mic_tie_margin, cfg.goodness_weight)
    source = labels[target_k]
    target = row["target"] if source == MIC else answers[source]
    shown_answers = {v: answers[v] for v in shown}
    order = ranker.order_z(profile, {v: zc[v][: len(agents)] for v in values}, agents)
    order += [v for v in shown if v not in order]  # empty answers last
    return {
        "id": row["id"],
        "question": row["question"],
        "profile": profile,
        "answers": shown_answers,
        "target_source": source,
        "top_weight": max(profile, key=profile.get),
        "order": order,
        "prompt": aggregator_messages(row["question"], profile, shown_answers, order),
        "completion": [{"role": "assistant", "content": target}],
    }


def data_stats(records: Sequence[Mapping], values: Sequence[str]) -> dict:
    """How much in the data depends on c: targets by source, questions with ≥ 2 different targets, all shown."""
    by_q: dict[str, set] = {}
    for r in records:
        by_q.setdefault(r["question"], set()).add(r["completion"][0]["content"])
    sources: dict[str, int] = {}
    for r in records:
        sources[r["target_source"]] = sources.get(r["target_source"], 0) + 1
    return {
        "rows": len(records),
        "questions": len(by_q),
        "questions_with_2plus_targets": sum(len(t) >= 2 for t in by_q.values()),
        "rows_showing_all_agents": sum(len(r["answers"]) == len(values) for r in records),
        "graded_rows_target_top_weight": _top_weight_share(records),
        "target_sources": sources,
    }


def _top_weight_share(records: Sequence[Mapping]) -> float | None:
    """Share of graded rows (all weights positive, not all equal) whose target is the top-weighted agent's answer."""
    graded = [r for r in records if min(r["profile"].values()) > 0 and len(set(r["profile"].values())) > 1]
    if not graded:
        return None
    return sum(r["target_source"] == r["top_weight"] for r in graded) / len(graded)
