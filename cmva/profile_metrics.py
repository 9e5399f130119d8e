"""Does an answer follow the profile c? Statistics over value scores of answers to the same question.

- paired one-hot test: each question answered under e_i and e_j (i ≠ j); win rate P[r_i(y | e_i) > r_i(y | e_j)]
  (a tie counts one half), with a bootstrap 95 % CI over questions;
- graded sensitivity: Spearman(c, the answer's value scores centred per value over the answers to the same
  question), so the classifiers' per-value base rates do not set the ranking;
- shuffled-c controls: the same statistics with the profiles permuted (within a question for the paired test,
  across all probes for the graded one); the gap real − shuffled is the evidence, not the raw figure.

Every function takes scores already computed (`{value: [score per answer]}`), so each is tested on hand-made
numbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

CONTROL_PERMUTATIONS = 50  # shuffled-c control: mean over this many permutations (seeded)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def bootstrap_ci(per_unit: Sequence[float], seed: int = 0, n_resamples: int = 2000) -> list[float]:
    """Percentile bootstrap 95 % CI of the mean over independent units (scipy.stats.bootstrap); NaNs dropped.

    Example:
        >>> bootstrap_ci([1.0, 1.0, 1.0])
        [1.0, 1.0]
    """
    from scipy.stats import bootstrap

    x = np.asarray([v for v in per_unit if not np.isnan(v)], dtype=float)
    if len(x) == 0:
        return [float("nan"), float("nan")]
    if len(x) < 2 or np.all(x == x[0]):  # no spread to resample
        return [float(x.mean()), float(x.mean())]
    res = bootstrap((x,), np.mean, n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def paired_delta(mine: Sequence[float], other: Sequence[float], seed: int = 0) -> dict:
    """Mean of `mine − other` over paired units (e.g. two systems' ROUGE-L on the same rows), with its bootstrap 95 % CI.

    Example:
        >>> r = paired_delta([0.5, 0.5, 0.2], [0.25, 0.5, 0.0])
        >>> r["delta"], len(r["ci95"])
        (0.15, 2)
    """
    d = np.asarray(mine, dtype=float) - np.asarray(other, dtype=float)
    if len(d) == 0:
        raise ValueError("paired_delta needs at least one paired unit")
    return {"delta": float(np.nanmean(d)), "ci95": bootstrap_ci(list(d), seed)}


def centred_by_question(scores: Sequence[Sequence[float]], groups: Sequence[Hashable]) -> np.ndarray:
    """Each answer's value scores minus the mean, per value, over the answers to the same question.

    Example:
        >>> centred_by_question([[0.9, 0.2], [0.7, 0.4], [0.5, 0.5]], ["q1", "q1", "q2"]).round(2).tolist()
        [[0.1, -0.1], [-0.1, 0.1], [0.0, 0.0]]
    """
    arr = np.asarray(scores, dtype=float)
    out = np.empty_like(arr)
    keys = list(groups)
    for g in set(keys):
        idx = [k for k, x in enumerate(keys) if x == g]
        out[idx] = arr[idx] - arr[idx].mean(axis=0)
    return out


def _mean_spearman(profiles, centred, names) -> tuple[float, int]:
    rhos = [spearman([p[v] for v in names], list(c)) for p, c in zip(profiles, centred, strict=True)]
    ok = [r for r in rhos if not np.isnan(r)]
    return (float(np.mean(ok)) if ok else float("nan")), len(ok)


def sensitivity(
    profiles: Sequence[Mapping[str, float]],
    scores: Mapping[str, Sequence[float]],
    groups: Sequence[Hashable],
    seed: int = 0,
) -> dict:
    """Mean Spearman between each requested profile and the answer's value scores centred per question,
    and the same with the profiles shuffled across answers (control).

    `n` counts the answers whose Spearman is defined (an answer scored like every other answer to its question
    centres to 0); `answers` counts all of them.
    """
    if not profiles:
        return {"mean_spearman": float("nan"), "n": 0, "answers": 0, "shuffled": float("nan")}
    names = list(profiles[0])
    centred = centred_by_question([[scores[v][k] for v in names] for k in range(len(profiles))], groups)
    mean, n = _mean_spearman(profiles, centred, names)
    rng = np.random.default_rng(seed)
    shuffled = [
        _mean_spearman([profiles[k] for k in rng.permutation(len(profiles))], centred, names)[0]
        for _ in range(CONTROL_PERMUTATIONS)
    ]
    ok = [s for s in shuffled if not np.isnan(s)]
    return {"mean_spearman": mean, "n": n, "answers": len(profiles), "shuffled": float(np.mean(ok)) if ok else mean}


def _wins_per_question(scores, asked: Sequence[str], groups: Sequence[Hashable]) -> dict[Hashable, list[float]]:
    by_q: dict[Hashable, dict[str, int]] = {}
    for k, (g, v) in enumerate(zip(groups, asked, strict=True)):
        by_q.setdefault(g, {})[v] = k
    wins: dict[Hashable, list[float]] = {}
    for g, idx in by_q.items():
        for i, ki in idx.items():
            for j, kj in idx.items():
                if i != j:
                    a, b = scores[i][ki], scores[i][kj]
                    wins.setdefault(g, []).append(1.0 if a > b else 0.5 if a == b else 0.0)
    return wins


def paired_win_rate(
    scores: Mapping[str, Sequence[float]], asked: Sequence[str], groups: Sequence[Hashable], seed: int = 0
) -> dict:
    """P[r_i(y | e_i) > r_i(y | e_j)] over every question and ordered pair i ≠ j (ties count 1/2).

    Args:
        scores: value → score of each answer.
        asked: the value whose one-hot profile e_v each answer was asked under.
        groups: the question each answer belongs to.

    Example:
        >>> s = {"care": [0.9, 0.4], "loyalty": [0.2, 0.6]}
        >>> paired_win_rate(s, ["care", "loyalty"], ["q", "q"])["win_rate"]
        1.0
    """
    wins = _wins_per_question(scores, asked, groups)
    per_q = [float(np.mean(w)) for w in wins.values()]
    rng = np.random.default_rng(seed)
    shuffled = []
    for _ in range(CONTROL_PERMUTATIONS):  # permute which answer was asked for which value, within a question
        perm = list(asked)
        for g in set(groups):
            idx = [k for k, x in enumerate(groups) if x == g]
            for k, src in zip(idx, rng.permutation(idx), strict=True):
                perm[k] = asked[src]
        shuffled.append(np.mean([x for w in _wins_per_question(scores, perm, groups).values() for x in w]))
    all_wins = [x for w in wins.values() for x in w]
    by_value = {}
    for v in scores:
        mine = [scores[v][k] for k, a in enumerate(asked) if a == v]
        others = [scores[v][k] for k, a in enumerate(asked) if a != v]
        by_value[v] = {"asked": float(np.mean(mine)) if mine else float("nan"), "others": float(np.mean(others))}
    return {
        "win_rate": float(np.mean(all_wins)) if all_wins else float("nan"),
        "ci95": bootstrap_ci(per_q, seed),
        "shuffled": float(np.mean(shuffled)) if all_wins else float("nan"),
        "questions": len(per_q),
        "comparisons": len(all_wins),
        "by_value": by_value,
    }


def same_opening(answers: Sequence[str], references: Sequence[str], words: int = 12) -> float:
    """Share of answers whose first `words` words are those of their reference (e.g. CMVA-GS vs the answer its
    ranking lists first: how often the aggregator answers with it).

    Example:
        >>> same_opening(["a b c", "a b x"], ["a b c d", "a b c"], words=4)  # "a b c" is not "a b c d"
        0.0
        >>> same_opening(["a b c", "x"], ["a b c", "y"], words=3)
        0.5
    """
    if not answers:
        return float("nan")
    same = [a.split()[:words] == r.split()[:words] for a, r in zip(answers, references, strict=True)]
    return float(np.mean(same))
