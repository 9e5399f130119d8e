"""How far the reward models and the agents can be trusted, from scores of evaluation answers.

- conformity (paper Table 1) with a bootstrap 95 % CI of each agent's gain over the PT model (paired by
  question) and the share of the gap to 1.0 it closes;
- agent specialisation: S[i][j] = P[r_i(answer of agent i) > r_i(answer of agent j)] over the test questions
  (ties 1/2); what the aggregator can choose between is what the off-diagonal leaves above 0.5;
- pairwise correlation of the rewards over the evaluation's answers (values the classifiers cannot tell apart
  correlate near 1);
- Spearman between each reward and answer length in words (|ρ| > 0.3: the classifier reads length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cmva.profile_metrics import paired_delta, spearman


def conformity(pt: Mapping[str, Sequence[float]], agents: Mapping[str, Sequence[float]], seed: int = 0) -> dict:
    """Per value: mean reward of the PT model's and of the value's agent's answers to the same questions.

    Args:
        pt: value → the reward of the PT model's answer to each question.
        agents: value → the reward (for that value) of that value's agent's answer to each question.
    """
    out = {}
    for v, agent in agents.items():
        base, mine = np.asarray(pt[v], dtype=float), np.asarray(agent, dtype=float)
        paired = paired_delta(mine, base, seed)
        gap = 1.0 - float(base.mean())
        out[v] = {
            "pt": float(base.mean()),
            "agent": float(mine.mean()),
            "delta": paired["delta"],
            "delta_ci95": paired["ci95"],
            "gap_closed": paired["delta"] / gap if gap > 0 else float("nan"),
        }
    return out


def specialisation(agent_scores: Mapping[str, Mapping[str, Sequence[float]]]) -> dict:
    """S[i][j] = P[r_i(agent i's answer) > r_i(agent j's answer)] over questions, ties 1/2; diagonal None.

    Args:
        agent_scores: agent value j → {value i → r_i of agent j's answer to each question}.

    Example:
        >>> s = {"care": {"care": [0.9], "loyalty": [0.1]}, "loyalty": {"care": [0.2], "loyalty": [0.8]}}
        >>> specialisation(s)["mean_off_diagonal"]
        1.0
    """
    names = list(agent_scores)
    matrix: dict[str, dict[str, float | None]] = {}
    off = []
    for i in names:
        matrix[i] = {}
        for j in names:
            if i == j:
                matrix[i][j] = None
                continue
            a, b = np.asarray(agent_scores[i][i]), np.asarray(agent_scores[j][i])
            p = float(np.mean((a > b) + 0.5 * (a == b))) if len(a) else float("nan")
            matrix[i][j] = p
            off.append(p)
    return {"matrix": matrix, "mean_off_diagonal": float(np.mean(off)) if off else float("nan")}


def reward_correlation(scores: Mapping[str, Sequence[float]]) -> dict:
    """Pearson correlation of every pair of rewards over the same answers, and the largest off-diagonal one."""
    names = list(scores)
    arr = np.asarray([scores[v] for v in names], dtype=float)
    corr = np.corrcoef(arr) if arr.shape[1] > 1 else np.full((len(names), len(names)), np.nan)
    pairs = [corr[a, b] for a in range(len(names)) for b in range(a + 1, len(names)) if not np.isnan(corr[a, b])]
    return {
        "matrix": {u: {v: float(corr[a, b]) for b, v in enumerate(names)} for a, u in enumerate(names)},
        "max_pairwise": float(max(pairs)) if pairs else float("nan"),
    }


def length_correlation(scores: Mapping[str, Sequence[float]], texts: Sequence[str]) -> dict[str, float]:
    """Spearman between each reward and the answer's length in words."""
    lengths = [len(t.split()) for t in texts]
    return {v: spearman(list(s), lengths) for v, s in scores.items()}
