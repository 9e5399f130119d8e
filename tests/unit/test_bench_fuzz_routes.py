"""bench/reliability's cases for the predictors' stream and chat routes, checked offline against the code that
validates them (cmva.serving.chat_request, cmva.serving.schemas): valid ones pass, the others fail naming the
field; and a stream answered 200 counts as failed unless it ends with its usage line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("hypothesis")

from bench.reliability_fuzz import names_problem  # noqa: E402
from bench.reliability_fuzz_routes import route_cases, stream_errors  # noqa: E402

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


def refusal(case, served: list[str]) -> str | None:
    """The 4xx message the predictor's validation gives `case`, or None when it accepts it."""
    from kserve.errors import InvalidInput

    from cmva.serving.chat_request import chat_job
    from cmva.serving.limits import check_work_budget
    from cmva.serving.openai_request import RequestError
    from cmva.serving.schemas import parse_aggregator_request

    body = json.loads(case.body)
    try:
        if case.endpoint.endswith(".chat"):
            job = chat_job(body, served)
            check_work_budget(1, job.max_tokens)
        else:
            req = parse_aggregator_request(body, VALUES)
            if len(req.instances) != 1:
                raise InvalidInput(f"instances: a stream answers one instance, got {len(req.instances)}")
            check_work_budget(1, req.parameters.max_new_tokens)
    except (RequestError, InvalidInput) as e:
        return str(e)
    return None


@pytest.mark.parametrize("topology", ["packed", "separate"])
def test_route_cases_expect_what_the_routes_answer(topology):
    cases = route_cases(240, topology, VALUES)
    assert {c.endpoint.split("/")[1] for c in cases} == {"aggregator.stream", "agent.chat", "aggregator.chat"}
    assert {c.route for c in cases} == {"/v1/models/cmva:stream", "/openai/v1/chat/completions"}
    checked = {"ok": 0, "error": 0}
    for c in cases:
        try:
            body = json.loads(c.body)
        except (ValueError, RecursionError):  # not JSON, or nested too deep: refused before validation
            continue
        if not isinstance(body, dict) or b"NaN" in c.body or b"Infinity" in c.body:
            continue
        served = (
            (VALUES + ["aggregator"]) if topology == "packed" else [c.server if c.server in VALUES else "aggregator"]
        )
        error = refusal(c, served)
        checked["ok" if error is None else "error"] += 1
        assert (error is None) == (c.expect == "ok") or c.expect == "either", (c.kind, c.body[:200], error)
        assert error is None or names_problem(error, c.paths), (c.kind, error, c.paths)
    assert checked["ok"] > 10 and checked["error"] > 40, checked


def test_stream_errors_counts_200s_that_did_not_end_with_the_usage():
    cases = route_cases(6, "packed", VALUES)
    stream = next(c for c in cases if c.endpoint.endswith("aggregator.stream"))
    usage = '{"text": "Hi"}\n{"usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n'
    failed = '{"text": "Hi"}\n{"error": "aggregator generation failed: RuntimeError()"}\n'
    results = [{"status": 200, "tail": usage}, {"status": 200, "tail": failed}, {"status": 200, "tail": '{"text": "H'}]
    results += [{"status": 400, "tail": '{"error": "instances: bad"}'}]
    s = stream_errors([stream] * 4, results)
    assert (s["streams"], s["failed"]) == (3, 2)
    assert s["examples"][0]["error"].startswith("error line: aggregator generation failed")
