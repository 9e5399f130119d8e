"""Aggregator data in which c matters: targets by normalised c·r(y), random drops independent of c."""

from __future__ import annotations

import json
import random

import pytest

from cmva.aggregator_data import (
    MIC,
    build_aggregator_data,
    choose_target,
    select_answers,
    shown_values,
    target_scores,
)
from cmva.config import AggregatorCfg
from cmva.ranking import AnswerRanker

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


class EchoEngine:
    """Each agent answers with its own value's name in the text."""

    def generate(self, messages, adapters, **_):
        return [f"{a} says: {m[-1]['content'][:20]}" for m, a in zip(messages, adapters, strict=True)]


class KeywordRewards:
    """r_v(text) = 0.9 if v is named in the text, 0.2 otherwise; MIC's answers score 0.5 on every value."""

    def score(self, texts):
        return {v: [0.9 if v in t else 0.5 if t.startswith("MIC") else 0.2 for t in texts] for v in VALUES}


def mic_rows(n):
    return [
        {"id": f"r{i}", "question": f"question {i}?", "target": f"MIC answer {i}", "profile": [1, 0, 0, 0, 0]}
        for i in range(n)
    ]


def test_each_question_has_profiles_with_different_targets(tmp_path):
    cfg = AggregatorCfg(graded_profiles=3, onehot_profiles=1, drop_rate=0.0, mic_tie_margin=0.1)
    path = build_aggregator_data(EchoEngine(), KeywordRewards(), mic_rows(6), VALUES, tmp_path, cfg, seed=0)
    rows = [json.loads(line) for line in open(path)]
    assert len(rows) == 6 * 5
    by_q: dict[str, set] = {}
    for r in rows:
        by_q.setdefault(r["question"], set()).add(r["completion"][0]["content"])
        hot = [v for v, w in r["profile"].items() if w == 1.0 and sum(r["profile"].values()) == 1.0]
        if hot:  # a one-hot profile: the agent of that value wins (0.9 vs MIC's 0.5)
            assert r["target_source"] == hot[0] and r["completion"][0]["content"].startswith(hot[0])
    assert all(len(targets) >= 2 for targets in by_q.values())
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["questions_with_2plus_targets"] == 6
    assert stats["rows_showing_all_agents"] >= len(rows) / 2


def test_agent_targets_are_listed_first_and_the_saved_ranker_orders_alike(tmp_path):
    cfg = AggregatorCfg(graded_profiles=4, onehot_profiles=1, drop_rate=0.2, mic_tie_margin=0.0, goodness_weight=0.25)
    path = build_aggregator_data(EchoEngine(), KeywordRewards(), mic_rows(5), VALUES, tmp_path, cfg, seed=1)
    rows = [json.loads(line) for line in open(path)]
    ranking = json.loads((tmp_path / "ranking.json").read_text())
    assert ranking["rewards"] == "second" and ranking["goodness_weight"] == 0.25 and set(ranking["mean"]) == set(VALUES)
    ranker = AnswerRanker.load(tmp_path, tmp_path / "no-rewards-here", {"second": KeywordRewards()})  # held already
    agent_targets = [r for r in rows if r["target_source"] != MIC]
    assert agent_targets and all(r["order"][0] == r["target_source"] for r in agent_targets)
    assert ranker.order([r["profile"] for r in rows], [r["answers"] for r in rows]) == [r["order"] for r in rows]
    for r in rows:  # the prompt lists the answers in that order
        text = r["prompt"][0]["content"]
        assert "best match for this profile first" in text
        assert [text.index(f"[{v}, weight") for v in r["order"]] == sorted(
            text.index(f"[{v}, weight") for v in r["order"]
        )


class MicWinsRewards(KeywordRewards):
    """MIC's answers score 0.95 on every value: the best candidate under any profile."""

    def score(self, texts):
        return {
            v: [0.95 if t.startswith("MIC") else s for t, s in zip(texts, x, strict=True)]
            for v, x in super().score(texts).items()
        }


@pytest.mark.parametrize("mic_candidate", ["all", "own"])
def test_mic_candidate_own_keeps_mics_answer_to_the_rows_under_mics_own_profile(tmp_path, mic_candidate):
    cfg = AggregatorCfg(graded_profiles=2, onehot_profiles=2, drop_rate=0.0, mic_candidate=mic_candidate)
    path = build_aggregator_data(EchoEngine(), MicWinsRewards(), mic_rows(4), VALUES, tmp_path, cfg, seed=0)
    rows = [json.loads(line) for line in open(path)]
    own = rows[:: 1 + 2 + 2]  # each question's first row is asked under MIC's own profile
    assert all(r["target_source"] == MIC for r in own)
    others = [r for k, r in enumerate(rows) if k % 5]
    if mic_candidate == "all":
        assert all(r["target_source"] == MIC for r in others)
    else:  # the best shown agent answer, the one listed first
        assert all(r["target_source"] == r["order"][0] != MIC for r in others)
        assert all(r["completion"][0]["content"].startswith(r["target_source"]) for r in others)


def test_target_weights_values_by_normalised_profile_and_mic_takes_near_ties():
    z = {"care": [1.0, 0.0, 0.5], "loyalty": [0.0, 1.0, 0.5]}
    labels = ["care", "loyalty", MIC]
    assert choose_target({"care": 0.75, "loyalty": 0.25}, z, labels, 0.0) == 0
    assert choose_target({"care": 0.25, "loyalty": 0.75}, z, labels, 0.0) == 1
    assert choose_target({"care": 0.25, "loyalty": 0.75}, z, labels, 0.3) == 2  # 0.5 is within 0.3 of 0.75
    # scale of c does not matter (c / Σc)
    assert choose_target({"care": 3.0, "loyalty": 1.0}, z, labels, 0.0) == 0


def test_goodness_weight_trades_general_goodness_for_the_part_that_moves_with_c():
    z = {"care": [1.0, 0.8], "loyalty": [1.0, -0.5]}  # 0: good on both values; 1: care only
    c = {"care": 0.75, "loyalty": 0.25}
    assert target_scores(c, z, 1.0) == pytest.approx([1.0, 0.475])  # = (c / Σc)·z
    assert choose_target(c, z, ["care", "loyalty"], 0.0, goodness_weight=1.0) == 0
    assert choose_target(c, z, ["care", "loyalty"], 0.0, goodness_weight=0.0) == 1
    # the profile-independent part ranks candidates alike for every c: only the specific part changes
    flipped = {"care": 0.25, "loyalty": 0.75}
    assert choose_target(flipped, z, ["care", "loyalty"], 0.0, goodness_weight=0.0) == 0


def test_zscores_remove_each_values_base_rate():
    scores = {"care": [0.9, 0.8, 0.7], "loyalty": [0.1, 0.2, 0.3], "flat": [0.5, 0.5, 0.5]}
    z = AnswerRanker.fit(None, scores, 1.0).z(scores)
    assert z["care"].mean() == pytest.approx(0) and z["loyalty"][2] == pytest.approx(z["care"][0])
    assert list(z["flat"]) == [0, 0, 0]


def test_random_drops_do_not_depend_on_the_profile():
    cfg = AggregatorCfg(drop_rate=0.3)
    a = dict.fromkeys(VALUES, 1.0)
    b = {"care": 0.25, "fairness": 1.0, "loyalty": 0.5, "authority": 0.75, "sanctity": 0.25}
    drops_a = [shown_values(a, cfg, random.Random(s)) for s in range(400)]
    drops_b = [shown_values(b, cfg, random.Random(s)) for s in range(400)]
    assert drops_a == drops_b  # same random state → same drop, whatever c says
    share = sum(len(s) < len(VALUES) for s in drops_a) / len(drops_a)
    assert 0.2 < share < 0.4
    dropped = [next(v for v in VALUES if v not in s) for s in drops_a if len(s) < len(VALUES)]
    assert set(dropped) == set(VALUES)  # any agent, not the low-weight ones


def test_zero_weight_agents_are_skipped_and_never_all_dropped():
    cfg = AggregatorCfg(drop_rate=1.0)
    assert shown_values({"care": 1.0, "loyalty": 0.0}, cfg, random.Random(0)) == ["care"]
    assert len(shown_values({"care": 1.0, "loyalty": 0.5}, cfg, random.Random(0))) == 1


class _TextScores:
    """A reward model reading its scores from the text: 'care=0.9 loyalty=0.1'."""

    def score(self, texts):
        parsed = [dict(kv.split("=") for kv in t.split()) for t in texts]
        return {v: [float(p[v]) for p in parsed] for v in ("care", "loyalty")}


def _ranker(agents, goodness_weight):
    scores = _TextScores()
    return AnswerRanker.fit(scores, scores.score([t for a in agents for t in a.values()]), goodness_weight)


def test_selector_applies_the_target_rule_to_each_probes_agent_answers():
    agents = [
        {"care": "care=0.9 loyalty=0.5", "loyalty": "care=0.5 loyalty=0.9"},
        {"care": "care=0.8 loyalty=0.8", "loyalty": "care=0.2 loyalty=0.3"},  # care's answer is good on both
    ]
    probes = [
        (0, {"care": 1.0, "loyalty": 0.25}),
        (0, {"care": 0.25, "loyalty": 1.0}),
        (1, {"care": 0.0, "loyalty": 1.0}),
    ]
    picked = select_answers(agents, probes, _ranker(agents, 0.0))
    assert picked == [agents[0]["care"], agents[0]["loyalty"], agents[1]["loyalty"]]  # c = e_loyalty shows loyalty only
    # with general goodness weighted in, question 1's all-round answer wins whatever c leans to
    both = [(1, {"care": 0.25, "loyalty": 1.0})]
    assert select_answers(agents, both, _ranker(agents, 1.0)) == [agents[1]["care"]]
    assert select_answers(agents, [], _ranker(agents, 1.0)) == []
