"""The aggregator's prompt: answers in the ranker's order, or by weight; only values with a weight are shown."""

from __future__ import annotations

from cmva.prompts import aggregator_messages


def _listed(messages) -> list[str]:
    return [line[1 : line.index(",")] for line in messages[0]["content"].splitlines() if line.startswith("[")]


def test_answers_follow_the_given_order_else_the_weights():
    profile = {"care": 0.25, "fairness": 1.0, "loyalty": 0.5}
    answers = {"care": "c", "fairness": "f", "loyalty": "l"}
    assert _listed(aggregator_messages("q?", profile, answers)) == ["fairness", "loyalty", "care"]
    assert _listed(aggregator_messages("q?", profile, answers, ["care", "loyalty", "fairness"])) == [
        "care",
        "loyalty",
        "fairness",
    ]


def test_an_answer_for_a_value_the_profile_does_not_weigh_is_not_shown():
    """Found by bench/reliability at f1e8cb1: the aggregator predictor answered 500 (KeyError) for such a body."""
    profile = {"care": 1.0, "loyalty": 0.0}
    answers = {"care": "c", "loyalty": "l", "authority": "a"}
    for order in (None, ["authority", "loyalty", "care"], ["care"]):
        text = aggregator_messages("q?", profile, answers, order)[0]["content"]
        assert "[authority" not in text and set(_listed([{"content": text}])) == {"care", "loyalty"}
