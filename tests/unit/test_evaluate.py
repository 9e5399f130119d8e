"""Profile sensitivity on hand-made scores: centring per question, Spearman, graded all-positive probes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cmva.aggregator_data import graded_profiles
from cmva.evaluate import rouge_lines
from cmva.profile_metrics import (
    bootstrap_ci,
    centred_by_question,
    paired_delta,
    paired_win_rate,
    same_opening,
    sensitivity,
)


def test_centring_removes_each_values_base_rate_per_question():
    # care scores sit far above loyalty's for every answer; only the differences between answers remain.
    scores = [[0.9, 0.1], [0.8, 0.3], [0.5, 0.5]]
    got = centred_by_question(scores, ["q1", "q1", "q2"])
    assert np.allclose(got, [[0.05, -0.1], [-0.05, 0.1], [0.0, 0.0]])


def test_sensitivity_follows_the_profile_only_after_centring():
    profiles = [{"care": 1.0, "loyalty": 0.25}, {"care": 0.25, "loyalty": 1.0}]
    # Raw scores rank care first for both answers (base rate); the second answer moved toward loyalty.
    scores = {"care": [0.9, 0.8], "loyalty": [0.2, 0.4]}
    got = sensitivity(profiles, scores, [0, 0])
    assert (got["mean_spearman"], got["n"], got["answers"]) == (pytest.approx(1.0), 2, 2)
    reversed_ = {"care": [0.8, 0.9], "loyalty": [0.4, 0.2]}
    assert sensitivity(profiles, reversed_, [0, 0])["mean_spearman"] == pytest.approx(-1.0)
    same = {"care": [0.9, 0.9], "loyalty": [0.2, 0.2]}  # the answer did not move: undefined, not counted
    got = sensitivity(profiles, same, [0, 0])
    assert np.isnan(got["mean_spearman"]) and got["n"] == 0 and got["answers"] == 2


def test_shuffled_control_removes_real_following():
    rng = np.random.default_rng(1)
    names = ["care", "fairness", "loyalty"]
    # Per question, three answers under the three rotations of a graded profile, scored with a per-value
    # base rate (care high, loyalty low) plus exactly the requested weight.
    profiles = []
    for _ in range(20):
        w = list(rng.permutation([0.0, 0.5, 1.0]))
        profiles += [dict(zip(names, w[k:] + w[:k], strict=True)) for k in range(3)]
    base = {"care": 0.6, "fairness": 0.3, "loyalty": 0.0}
    scores = {v: [base[v] + 0.4 * p[v] for p in profiles] for v in names}
    got = sensitivity(profiles, scores, [k // 3 for k in range(60)])
    assert got["mean_spearman"] == pytest.approx(1.0)
    assert abs(got["shuffled"]) < 0.3  # profiles permuted across answers: the link is gone


def test_paired_win_rate_counts_wins_ties_and_losses():
    # Question 0: the care-asked answer scores higher on care (win) and the loyalty-asked answer ties on loyalty.
    # Question 1: both comparisons are losses.
    scores = {"care": [0.9, 0.5, 0.1, 0.6], "loyalty": [0.4, 0.4, 0.8, 0.2]}
    asked = ["care", "loyalty", "care", "loyalty"]
    got = paired_win_rate(scores, asked, [0, 0, 1, 1])
    assert got["win_rate"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert (got["questions"], got["comparisons"]) == (2, 4)
    assert got["by_value"]["care"] == {"asked": pytest.approx(0.5), "others": pytest.approx(0.55)}
    lo, hi = got["ci95"]
    assert lo <= got["win_rate"] <= hi and lo >= 0.0 and hi <= 1.0


def test_perfect_following_has_ci_above_half_and_shuffled_near_half():
    names = ["care", "fairness", "loyalty", "authority", "sanctity"]
    asked = [v for _ in range(12) for v in names]
    groups = [q for q in range(12) for _ in names]
    scores = {v: [0.9 if a == v else 0.3 for a in asked] for v in names}
    got = paired_win_rate(scores, asked, groups)
    assert got["win_rate"] == 1.0 and got["ci95"] == [1.0, 1.0]
    assert 0.3 < got["shuffled"] < 0.7
    assert bootstrap_ci([0.0, 1.0] * 20)[0] < 0.5 < bootstrap_ci([0.0, 1.0] * 20)[1]


def test_probe_profiles_are_graded_and_all_positive():
    names = ["care", "fairness", "loyalty", "authority", "sanctity"]
    profiles = graded_profiles(names, 200, random.Random(0))
    assert all(min(p.values()) > 0 and len(set(p.values())) >= 2 for p in profiles)
    assert all(set(p.values()) <= {0.25, 0.5, 0.75, 1.0} for p in profiles)
    assert len({tuple(p.values()) for p in profiles}) > 100  # drawn, not a fixed handful


def test_same_opening_compares_the_first_words_only():
    refs = ["Yes, tell them the truth because honesty matters here", "No.", "Be kind."]
    assert same_opening(["Yes, tell them the truth and more", "No.", "Be fair."], refs, words=5) == pytest.approx(2 / 3)
    assert same_opening(["Yes, tell", "No.", "Be kind."], refs, words=5) == pytest.approx(2 / 3)  # a prefix is not it
    assert np.isnan(same_opening([], []))


def test_paired_rouge_difference_tells_a_consistent_gap_from_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.3, size=60)
    better = paired_delta(base + 0.02, base)  # the same rows, 0.02 higher on every one: a sure difference
    assert better["delta"] == pytest.approx(0.02) and better["ci95"] == pytest.approx([0.02, 0.02])
    noisy = paired_delta(base + rng.normal(0, 0.1, size=60), base)  # unrelated jitter: the CI straddles 0
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1]
    with pytest.raises(ValueError, match="at least one"):
        paired_delta([], [])


def test_rouge_table_shows_cmva_gs_minus_each_baseline_with_its_ci():
    r = {k: 0.2 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    report = {
        "rouge": {"cmva-gs": r, "few-shot": {**r, "rougeL": 0.25}},
        "rouge_ci95": {"cmva-gs": {"rougeL": [0.15, 0.25]}, "few-shot": {"rougeL": [0.2, 0.3]}},
        "rougeL_delta": {"few-shot": {"delta": -0.05, "ci95": [-0.09, -0.01]}},
    }
    rows = {line.split(" | ")[0]: line for line in rouge_lines(report) if line.startswith("| ")}
    assert rows["| few-shot"].endswith("| [0.2000, 0.3000] | -0.0500 [-0.0900, -0.0100] |")
    assert rows["| cmva-gs"].endswith("| — |")
