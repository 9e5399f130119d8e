"""Profile sensitivity on hand-made scores: centring per question, Spearman, probes with ≥ 2 positive weights."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cmva.evaluate import centred_by_question, random_profiles, sensitivity


def test_centring_removes_each_values_base_rate_per_question():
    # care scores sit far above loyalty's for every answer; only the differences between answers remain.
    scores = [[0.9, 0.1], [0.8, 0.3], [0.5, 0.5]]
    got = centred_by_question(scores, ["q1", "q1", "q2"])
    assert np.allclose(got, [[0.05, -0.1], [-0.05, 0.1], [0.0, 0.0]])


def test_sensitivity_follows_the_profile_only_after_centring():
    profiles = [{"care": 1.0, "loyalty": 0.25}, {"care": 0.25, "loyalty": 1.0}]
    # Raw scores rank care first for both answers (base rate); the second answer moved toward loyalty.
    scores = {"care": [0.9, 0.8], "loyalty": [0.2, 0.4]}
    assert sensitivity(profiles, scores, [0, 0]) == {"mean_spearman": pytest.approx(1.0), "n": 2, "answers": 2}
    reversed_ = {"care": [0.8, 0.9], "loyalty": [0.4, 0.2]}
    assert sensitivity(profiles, reversed_, [0, 0])["mean_spearman"] == pytest.approx(-1.0)
    same = {"care": [0.9, 0.9], "loyalty": [0.2, 0.2]}  # the answer did not move: undefined, not counted
    assert sensitivity(profiles, same, [0, 0]) == {
        "mean_spearman": pytest.approx(np.nan, nan_ok=True),
        "n": 0,
        "answers": 2,
    }


def test_probe_profiles_have_two_positive_weights():
    names = ["care", "fairness", "loyalty", "authority", "sanctity"]
    profiles = random_profiles(names, 200, random.Random(0))
    assert all(sum(w > 0 for w in p.values()) >= 2 and len(set(p.values())) >= 2 for p in profiles)
    assert any(set(p.values()) - {0.0, 1.0} for p in profiles)  # graded, not only binary
