"""The order in which the aggregator sees the agents' answers: best for the user's profile first.

A 135M aggregator trained by SFT does not learn to judge five answers by value (make run at 56337f6: CMVA-GS graded
Spearman 0.017, while copying the answer its own target rule prefers reached 0.458). So the target rule is applied
where the aggregator is asked, not only where its data is built: each shown answer is scored by the classifier set
that picks the training targets (the second set, not the evaluation's judge), its rewards standardised with the
statistics of the training candidates, and ranked by `cmva.aggregator_data.target_scores` for the row's c. The
aggregator reads the answers in that order, in training, evaluation and serving alike; where the target is an
agent's answer it is the first one listed.

The statistics travel with the aggregator adapter (`ranking.json`), so a served aggregator ranks exactly as its
training data did:

    {"values": [...], "mean": {"care": 0.61, ...}, "sd": {...}, "goodness_weight": 0.25, "rewards": "second"}

Example:
    >>> r = AnswerRanker(None, {"care": 0.5, "loyalty": 0.5}, {"care": 0.1, "loyalty": 0.1}, 1.0)
    >>> r.order_scored({"care": 1.0, "loyalty": 0.0}, {"care": {"care": 0.4, "loyalty": 0.9},
    ...                                                 "loyalty": {"care": 0.7, "loyalty": 0.1}})
    ['loyalty', 'care']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

RANKING_FILE = "ranking.json"


class AnswerRanker:
    """Ranks agent answers for a profile c by the target rule, with fixed reward statistics.

    Args:
        rewards: the scoring classifier set (`cmva.rewards.RewardModel`); None for `order_scored` only.
        mean, sd: per value, of the rewards over the aggregator's training candidates.
        goodness_weight: as `AggregatorCfg.goodness_weight`.
    """

    def __init__(self, rewards, mean: Mapping[str, float], sd: Mapping[str, float], goodness_weight: float):
        self.rewards, self.goodness_weight = rewards, goodness_weight
        self.mean, self.sd = dict(mean), dict(sd)

    @classmethod
    def fit(cls, rewards, scores: Mapping[str, Sequence[float]], goodness_weight: float) -> AnswerRanker:
        """Statistics from the rewards of all training candidates (`scores`: value → rewards)."""
        mean = {v: float(np.mean(x)) for v, x in scores.items()}
        sd = {v: float(np.std(x)) for v, x in scores.items()}
        return cls(rewards, mean, sd, goodness_weight)

    def z(self, scores: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
        """Rewards standardised with the stored statistics (a value constant in training scores 0)."""
        out = {}
        for v, x in scores.items():
            a, sd = np.asarray(x, dtype=float), self.sd[v]
            out[v] = (a - self.mean[v]) / sd if sd > 0 else np.zeros_like(a)
        return out

    def order_scored(self, profile: Mapping[str, float], scores: Mapping[str, Mapping[str, float]]) -> list[str]:
        """Agent names, best first, from each answer's rewards (`scores`: agent → {value: reward})."""
        names = list(scores)
        return self.order_z(profile, self.z({v: [scores[a][v] for a in names] for v in profile}), names)

    def order_z(self, profile: Mapping[str, float], z: Mapping[str, Sequence[float]], names: Sequence[str]):
        """`names`, best first, from their standardised rewards (`z`: value → one per name)."""
        from cmva.aggregator_data import target_scores

        if len(names) < 2:
            return list(names)
        j = target_scores(profile, z, self.goodness_weight)
        return [names[k] for k in np.argsort(-j, kind="stable")]

    def order(self, profiles: Sequence[Mapping[str, float]], answers: Sequence[Mapping[str, str]]) -> list[list[str]]:
        """For each (c, shown answers): the agent names, best first. One scoring pass for all answers.

        An empty answer is listed last (it is never a training target)."""
        flat = [(i, a) for i, ans in enumerate(answers) for a, t in ans.items() if t.strip()]
        scored = self.rewards.score([answers[i][a] for i, a in flat]) if flat else {}
        per_row: list[dict[str, dict[str, float]]] = [{} for _ in answers]
        for k, (i, a) in enumerate(flat):
            per_row[i][a] = {v: s[k] for v, s in scored.items()}
        out = []
        for p, ans, sc in zip(profiles, answers, per_row, strict=True):
            out.append(self.order_scored(p, sc) + [a for a in ans if a not in sc])
        return out

    def save(self, out_dir: str | Path, rewards_name: str) -> Path:
        path = Path(out_dir) / RANKING_FILE
        meta = {"values": list(self.mean), "mean": self.mean, "sd": self.sd, "goodness_weight": self.goodness_weight}
        path.write_text(json.dumps({**meta, "rewards": rewards_name}, indent=2))
        return path

    @classmethod
    def load(
        cls, adapter_dir: str | Path, rewards_root: str | Path, loaded: Mapping | None = None
    ) -> AnswerRanker | None:
        """The ranker saved with an aggregator adapter, scoring with `rewards_root / <its rewards set>` (taken from
        `loaded`, {set directory name: RewardModel}, when the caller holds it already); None when the adapter has
        no `ranking.json` (trained before ranking existed: answers by weight)."""
        from cmva.rewards import RewardModel

        path = Path(adapter_dir) / RANKING_FILE
        if not path.is_file():
            return None
        meta = json.loads(path.read_text())
        rewards = (loaded or {}).get(meta["rewards"]) or RewardModel.load(Path(rewards_root) / meta["rewards"])
        return cls(rewards, meta["mean"], meta["sd"], meta["goodness_weight"])
