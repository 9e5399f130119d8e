"""Issue 13, item 7: a bounded batcher queue (503 + Retry-After when full), callers that go away do not
poison their batch, a timed-out agent call is not retried (the generation is not queued twice), reward
scoring off the event loop (health answers while a batch is scored)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx

from tests.serving.conftest import start_transformer
from tests.serving.stubs import good_answer, metric, stop


def _ask(url: str, question: str, values: list[str], timeout: float = 60.0) -> httpx.Response:
    body = {"instances": [{"question": question, "values": values}], "parameters": {"scores": False}}
    return httpx.post(f"{url}/v1/models/agents:predict", json=body, timeout=timeout)


def _in_background(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["response"] = fn(*args, **kwargs)
        except Exception as e:  # the test inspects it
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_full_queue_gets_503_with_retry_after(fake_predictor):
    url = fake_predictor("--delay_s", "3", "--max_queue", "2")
    first, first_out = _in_background(_ask, url, "first", ["care"])  # generating for 3 s
    time.sleep(0.5)
    queued, queued_out = _in_background(_ask, url, "queued", ["care", "fairness"])  # 2 jobs: the queue is full
    time.sleep(0.5)
    assert metric(url, "cmva_batcher_queue_depth") == 2
    r = _ask(url, "one too many", ["care"])
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert "queue full" in r.json()["error"]
    assert metric(url, "cmva_rejected_jobs_total") == 1
    for t in (first, queued):
        t.join()
    assert first_out["response"].status_code == 200 and queued_out["response"].status_code == 200
    assert _ask(url, "after", ["care"]).status_code == 200  # the queue drained: admitted again


def test_callers_that_go_away_do_not_poison_their_batch(fake_predictor, tmp_path):
    record = tmp_path / "generated.tsv"
    url = fake_predictor("--delay_s", "2", "--record", str(record))
    busy, _ = _in_background(_ask, url, "first", ["care"])  # batch 1 generates for 2 s
    time.sleep(0.5)
    # Queued behind batch 1: one caller gives up while queued, one while batch 2 (with the others) runs.
    gone_queued, gone_queued_out = _in_background(_ask, url, "gave up queued", ["care"], timeout=0.5)
    gone_running, gone_running_out = _in_background(_ask, url, "gave up running", ["care"], timeout=2.5)
    stays, stays_out = _in_background(_ask, url, "stays", ["care", "fairness"])
    for t in (busy, gone_queued, gone_running, stays):
        t.join()
    assert isinstance(gone_queued_out.get("error"), httpx.TimeoutException)
    assert isinstance(gone_running_out.get("error"), httpx.TimeoutException)
    r = stays_out["response"]
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["answers"] == {"care": "care: stays", "fairness": "fairness: stays"}
    generated = record.read_text()
    assert "gave up running" in generated  # it was in the running batch …
    assert "gave up queued" not in generated  # … but a job whose caller left before its batch is dropped
    assert _ask(url, "later", ["care"]).json()["predictions"][0]["answers"] == {"care": "care: later"}


def test_timed_out_agent_call_is_not_retried(stubs, tmp_path):
    care, fairness, aggregator = stubs["care"], stubs["fairness"], stubs["aggregator"]
    calls = []

    def fails_once(model, body):  # a 503 (full queue) is retried: the agent answers the second time
        calls.append(model)
        return (503, {"error": "generation queue full"}) if len(calls) == 1 else good_answer(model, body)

    care.delay_s, fairness.answer = 3.0, fails_once
    url, proc = start_transformer(
        tmp_path,
        {"care": care.url, "fairness": fairness.url},
        aggregator.url,
        "--agent_timeout_s",
        "1",
        "--agent_retries",
        "2",
    )
    try:
        body = {"instances": [{"question": "Should I return the wallet?", "profile": {"care": 1, "fairness": 1}}]}
        r = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        assert pred["degraded"] is True and pred["missing"] == ["care"] and set(pred["agents"]) == {"fairness"}
        time.sleep(1.5)
        assert care.requests["care"] == 1  # timed out once, not queued again by a retry
        assert calls == ["fairness", "fairness"]
        assert metric(url, "cmva_agent_failures_total", {"value": "care", "reason": "timeout"}) == 1
    finally:
        stop(proc)


def test_health_answers_while_a_batch_is_scored(fake_predictor):
    url = fake_predictor("--score_s", "2")
    body = {"instances": [{"question": "q?"}], "parameters": {"scores": True}}
    t0 = time.time()
    request, out = _in_background(httpx.post, f"{url}/v1/models/agents:predict", json=body, timeout=60)
    latencies = []
    with httpx.Client(timeout=10) as client:
        while request.is_alive():
            start = time.perf_counter()
            assert client.get(f"{url}/v2/health/ready").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.05)
    request.join()
    assert out["response"].status_code == 200 and time.time() - t0 >= 2.0
    assert len(latencies) >= 10, latencies  # scoring on the event loop: one probe, blocked for 2 s
    assert statistics.quantiles(latencies, n=10)[-1] < 0.1, latencies
    assert max(latencies) < 1.0, latencies
