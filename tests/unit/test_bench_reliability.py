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


# --- the predictors' cases, both topologies; the report of every part -----------------------------------
VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


@pytest.mark.parametrize("topology", ["packed", "separate"])
def test_predictor_cases_expect_what_the_schemas_answer(topology):
    """Each V1 predictor case, validated as its predictor does: valid ones pass, the others fail naming the field."""
    from kserve.errors import InvalidInput

    from bench.reliability_fuzz_predictors import topology_cases
    from cmva.serving.limits import check_work_budget
    from cmva.serving.schemas import parse_agent_request, parse_aggregator_request

    cases = topology_cases(160, topology, VALUES)
    assert len(cases) >= 160 and {c.endpoint.split("/")[0] for c in cases} == {topology}
    servers = {"packed": {"transformer", "packed"}, "separate": {"transformer", "aggregator", *VALUES}}[topology]
    assert {c.server for c in cases} == servers
    assert {c.endpoint.split("/")[1] for c in cases} == {
        "v1",
        "v2",
        "openai",
        *(f"{t}.{p}" for t in ("agent", "aggregator") for p in ("v1", "v2", "chat")),
        "aggregator.stream",
    }
    checked = 0
    for c in cases:
        target = c.endpoint.split("/")[1]
        if target not in ("agent.v1", "aggregator.v1") or b"NaN" in c.body or b"Infinity" in c.body:
            continue
        try:
            body = json.loads(c.body)
        except (ValueError, RecursionError):  # not JSON, or nested too deep: refused before validation
            continue
        if not isinstance(body, dict):
            continue
        served = VALUES if topology == "packed" or target == "aggregator.v1" else [c.server]
        error = None
        try:
            if target == "agent.v1":
                req = parse_agent_request(body, served)
                answers = sum(len(i.values or served) for i in req.instances)
            else:
                req = parse_aggregator_request(body, served)
                answers = len(req.instances)
            check_work_budget(answers, req.parameters.max_new_tokens)
        except InvalidInput as e:
            error = str(e)
        checked += 1
        assert (error is None) == (c.expect == "ok") or c.expect == "either", (c.kind, c.body[:200], error)
        assert error is None or names_problem(error, c.paths), (c.kind, error, c.paths)
    assert checked > 40


def test_restart_figures_from_request_records():
    from bench.reliability_restart import summarize_restart

    def rec(t0, t1, status, client=0, degraded=False, answer="a"):
        ok = status == 200
        return {"client": client, "t0": t0, "t1": t1, "status": status, "degraded": degraded if ok else None,
                "answer": answer if ok else None, "retry_after": "1" if status == 503 else None}  # fmt: skip

    records = [
        rec(0, 1, 200),
        rec(1, 11, 503),
        rec(11, 11.1, 503),
        rec(12, 13, 500),
        rec(14, 40, 503),
        rec(41, 42, 200),
    ]
    records.append(rec(43, 44, 200, degraded=True))
    s = summarize_restart(records, [(5, False), (20, True)], t_load=0, t_kill=10, t_restart=20, recovered=42, hang_s=20)
    assert (s["before_kill"], s["during_outage"], s["during_outage_other"]) == (1, 4, 1)
    assert (s["during_outage_status"], s["in_flight_at_recovery_status"]) == ({"503": 3, "500": 1}, {"200": 1})
    assert (s["hung"], s["after_recovery"], s["after_recovery_failed"]) == (1, 1, 1)
    assert (s["recovered_after_kill_s"], s["recovered_after_restart_s"], s["transformer_ready_while_down"]) == (
        32,
        22,
        1,
    )


def test_markdown_has_a_row_for_every_part_and_when_it_was_measured():
    from bench.reliability import Fuzzing
    from bench.reliability_report import PARTS, markdown
    from bench.reliability_restart import summarize_restart

    fuzz = Fuzzing()
    fuzz.cases = [Case("packed/v1", "valid", b"{}", (), "ok"), Case("separate/agent.v1", "x", b"{}", (("values",),))]
    fuzz.results = [{"status": 200, "text": "", "transport_error": False}] * 2
    restart = summarize_restart([], [], 0, 1, 2, None, 20) | {"clients": 8}
    agent = {"killed": "care", "clients": 8, "failed": 0, "total": 9, "after_kill": 5, "undegraded_after_kill": 0,
             "degraded_missing_victim": 5, "killed_after_s": 3, "before_kill": 2, "in_flight_at_kill": 2,
             "p50_latency_s": 1, "max_latency_s": 2, "startup_s": 9, "answers_in_full_after_sigcont_s": 1.0}  # fmt: skip
    attempt = {"server": "transformer", "path": "/v1", "body": "chunked", "status": 413, "sent_mb": 1.1,
               "answer_s": 0.1, "rss_before_mb": 300, "rss_growth_mb": 1}  # fmt: skip
    result = {
        "fuzz": fuzz.summary(),
        "kill_agent": agent,
        "hang_agent": agent,
        "restart_predictor": restart,
        "big_body": {"body_mb": 50, "attempts": [attempt], "all_413": True, "max_sent_mb": 1.1,
                     "transformer_rss_growth_mb": 1, "answers_after_ok": True},  # fmt: skip
        "unload": {"attempts": [{"topology": "packed", "server": "packed", "status": 403, "error": "disabled"}],
                   "total": 1, "refused_403": 1, "not_ready_after": 0, "answers_after_ok": True},  # fmt: skip
        "cancel_storm": {"storm": 9, "concurrency": 3, "client_timeouts_s": [0.02, 1.5], "after_failed": 0, "after": 4,
                         "after_clients": 2, "after_degraded": 0, "storm_outcomes": {"gave_up": 9}, "storm_s": 1,
                         "after_s": 1, "after_max_latency_s": 1, "queue_depth_after": {}, "server_tracebacks": 0},
        "hostile_manifest": {"attempts": [{"kind": "dotdot", "path": "../x", "error_type": "InvalidManifestError",
                                           "error": "…"}], "refused": 1, "written_outside_cache": 0},
    }  # fmt: skip
    for key in result:
        result[key] = result[key] | {"commit": "abc1234", "measured_at": "2026-11-26 06:00:00 UTC"}
    md = markdown(result)
    for key, (letter, what) in PARTS.items():
        if key not in ("pipeline", "s3"):
            assert f"| ({letter}) " in md and f"({letter}) {what} | not run" not in md, key
    assert "| (c) local KFP pipeline killed mid-stage, rerun | not run |" in md
    assert md.count("abc1234, 2026-11-26 06:00:00 UTC") >= 20
    assert "(packed 1, separate 1; 1 to predictors)" in md
