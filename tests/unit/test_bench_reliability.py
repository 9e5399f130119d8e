"""The pure helpers of bench/reliability: reading error bodies, deciding whether a 4xx names the field."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("hypothesis")

from bench.reliability_fuzz import Case, error_text, names_problem, summarize  # noqa: E402


def test_error_text_reads_kserve_openai_and_fastapi_bodies():
    assert "instances.0.question: must not be empty" in error_text(
        b'{"error": "instances.0.question: must not be empty"}'
    )
    openai = {
        "error": {"message": "messages: expected a user message", "type": "invalid_request_error", "param": "messages"}
    }
    assert "messages: expected" in error_text(json.dumps(openai).encode())
    fastapi = {"detail": [{"type": "missing", "loc": ["body", "inputs", 0, "name"], "msg": "Field required"}]}
    text = error_text(json.dumps(fastapi).encode())
    assert "body.inputs.0.name" in text and "inputs.0.name" in text and "Field required" in text
    assert error_text(b"Internal Server Error") == "Internal Server Error"


@pytest.mark.parametrize(
    "text, paths, named",
    [
        ("instances.0.profile: weight of 'care' must be a finite number", [("instances", 0, "profile", "care")], True),
        ("instances.0.profile: weight of 'care' must be …", [("instances", 1, "profile", "care")], False),
        ("instances.0.profile: weight of 'care' must be …", [("instances", 0, "profile", "loyalty")], False),
        ("instances: List should have at most 16 items", [("instances",)], True),
        (
            "parameters.max_new_tokens: Input should be greater than or equal to 1",
            [("max_tokens",), ("max_new_tokens",)],
            True,
        ),
        ("Unrecognized request format", [("body",), ("JSON",)], False),
        ("inputs.0.name | Field required", [("name",), ("inputs", 0, "name")], True),
        ("something went wrong", [], False),
    ],
)
def test_names_problem(text, paths, named):
    assert names_problem(text, paths) is named


def test_summarize_counts_findings():
    cases = [
        Case("v1", "valid", b"{}", (), "ok"),
        Case("v1", "question.bad", b"{}", (("instances", 0, "question"),)),
        Case("v2", "profile.missing", b"{}", (("profile",),)),
        Case("openai", "stream", b"{}", (("stream",),)),
        Case("openai", "model", b"{}", (("model",),)),
        Case("v1", "valid", b"{}", (), "ok"),
    ]
    results = [
        {"status": 200, "text": "", "transport_error": False},
        {"status": 400, "text": "instances.0.question: must not be empty", "transport_error": False},
        {"status": 400, "text": "inputs: bad", "transport_error": False},
        {"status": 500, "text": "TypeError", "transport_error": False},
        {"status": 200, "text": "", "transport_error": False},
        {"status": None, "text": "ReadTimeout", "transport_error": True},
    ]
    s = summarize(cases, results)
    assert (s["5xx"], s["4xx"], s["4xx_unnamed"], s["transport_errors"], s["malformed_accepted"]) == (1, 2, 1, 1, 1)
    assert s["examples"]["4xx_unnamed"][0]["kind"] == "profile.missing"
