"""Agent specialisation, conformity CIs, reward and length correlation on hand-made scores."""

from __future__ import annotations

import pytest

from cmva.reward_diagnostics import conformity, length_correlation, reward_correlation, specialisation


def test_specialisation_matrix_counts_wins_and_ties():
    # agent_scores[j][i]: reward i of agent j's answers to three questions.
    scores = {
        "care": {"care": [0.9, 0.8, 0.5], "loyalty": [0.1, 0.2, 0.3]},
        "loyalty": {"care": [0.2, 0.8, 0.7], "loyalty": [0.6, 0.1, 0.3]},
    }
    got = specialisation(scores)
    assert got["matrix"]["care"]["care"] is None
    assert got["matrix"]["care"]["loyalty"] == pytest.approx((1 + 0.5 + 0) / 3)  # win, tie, loss
    assert got["matrix"]["loyalty"]["care"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert got["mean_off_diagonal"] == pytest.approx(0.5)


def test_conformity_gain_ci_and_share_of_gap():
    got = conformity({"care": [0.5, 0.5, 0.5, 0.5]}, {"care": [0.7, 0.8, 0.9, 0.6]})["care"]
    assert got["delta"] == pytest.approx(0.25)
    assert got["gap_closed"] == pytest.approx(0.5)  # 0.25 of the 0.5 left to 1.0
    lo, hi = got["delta_ci95"]
    assert 0.1 <= lo <= 0.25 <= hi <= 0.4


def test_reward_and_length_correlation():
    scores = {"care": [0.1, 0.5, 0.9], "fairness": [0.2, 0.6, 1.0], "loyalty": [0.9, 0.5, 0.1]}
    corr = reward_correlation(scores)
    assert corr["matrix"]["care"]["fairness"] == pytest.approx(1.0)
    assert corr["matrix"]["care"]["loyalty"] == pytest.approx(-1.0)
    assert corr["max_pairwise"] == pytest.approx(1.0)
    lengths = length_correlation(scores, ["a", "a b", "a b c"])
    assert lengths["care"] == pytest.approx(1.0) and lengths["loyalty"] == pytest.approx(-1.0)
