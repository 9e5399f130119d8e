"""Reward models: trained on the sample corpus they beat chance on its held-out split."""

from __future__ import annotations

import pytest

from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
from cmva.rewards import RewardModel, binary_metrics, reward_function, train_rewards


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rewards")
    metrics = train_rewards(out, SAMPLE_SOCIALCHEM, SAMPLE_MIC)
    return out, metrics


def test_rewards_beat_chance_on_sample_test_split(reward_dir):
    _, metrics = reward_dir
    assert set(metrics) == {"care", "fairness", "loyalty", "authority", "sanctity"}
    for value, m in metrics.items():
        assert m["n"] >= 30, value
        # Chance is ~0.5 (both labels ≥ 30 % per value, balanced training): demand a clear margin.
        assert m["balanced_accuracy"] > 0.55, (value, m)
    assert sum(m["accuracy"] for m in metrics.values()) / 5 > 0.65


def test_saved_model_scores_in_unit_interval_and_separates(reward_dir):
    path, _ = reward_dir
    rm = RewardModel.load(path)
    good = "I'd check on your elderly neighbour and bring her some soup; being kind costs you nothing."
    bad = "Let him suffer, it's not your problem. Honestly kicking the dog shut it up fast."
    scores = rm.score([good, bad])
    assert all(0.0 <= s <= 1.0 for v in scores.values() for s in v)
    assert scores["care"][0] > scores["care"][1]
    f = reward_function(rm, "care")
    assert f(completions=[[{"role": "assistant", "content": good}]]) == pytest.approx([scores["care"][0]], abs=1e-5)
    with pytest.raises(ValueError, match="no reward head"):
        reward_function(rm, "liberty")


def test_binary_metrics():
    m = binary_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6])
    assert m["accuracy"] == 0.5 and m["f1"] == 0.5 and m["balanced_accuracy"] == 0.5
