"""NaN / ±Infinity bodies are named by field; valid JSON and non-JSON bodies are left to KServe."""

from __future__ import annotations

from cmva.serving.strict_json import non_json_numbers


def test_names_every_non_finite_number():
    body = b'{"instances": [{"profile": {"care": NaN, "loyalty": -Infinity}}, {"x": [1, Infinity]}]}'
    msg = non_json_numbers(body)
    assert "instances.0.profile.care: NaN" in msg
    assert "instances.0.profile.loyalty: -Infinity" in msg
    assert "instances.1.x.1: Infinity" in msg


def test_other_bodies_pass_through():
    assert non_json_numbers(b'{"instances": [{"profile": {"care": 1e308}}]}') is None  # valid JSON
    assert non_json_numbers(b'{"instances": [') is None  # not JSON at all: KServe's message
    assert non_json_numbers(b"[" * 100_000) is None  # too deep for Python's json
    assert non_json_numbers(b"") is None
