"""Issue 13, item 10: weights load in `load()` and readiness follows it; the transformer's readiness follows
its predictors; cmva's own Prometheus metrics on KServe's /metrics."""

from __future__ import annotations

import time

import httpx

from tests.conftest import free_port
from tests.serving.conftest import start_transformer
from tests.serving.stubs import StubPredictor, metric, stop

READY_ROUTES = ("/v2/health/ready", "/v1/models/cmva", "/v2/models/cmva/ready")


def test_weights_load_in_load_and_readiness_follows(smoke_run):
    from cmva.serving.predictors import AgentModel, AggregatorModel, SharedBackend

    out, _, _ = smoke_run
    backend = SharedBackend(str(out), ["care", "aggregator"])
    agent = AgentModel("care", backend, ["care"])
    aggregator = AggregatorModel("cmva", backend, ["care"])
    assert not agent.ready and not aggregator.ready and backend.engine is None  # constructing loads nothing
    assert agent.load() is True and agent.ready and not aggregator.ready
    engine = backend.engine
    assert set(engine.adapters) == {"care", "aggregator"} and backend.rewards is not None
    assert aggregator.load() is True
    assert backend.engine is engine  # one base model for every Model of the process


def _statuses(url: str) -> set[int]:
    return {httpx.get(f"{url}{route}", timeout=10).status_code for route in READY_ROUTES}


def _until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_transformer_ready_only_when_its_predictors_are(tmp_path):
    care, fairness, aggregator = (StubPredictor(free_port()) for _ in range(3))  # not started: "still loading"
    url, proc = start_transformer(tmp_path, {"care": care.url, "fairness": fairness.url}, aggregator.url, wait="live")
    try:
        assert _statuses(url) == {503}
        care.start()
        aggregator.start()
        time.sleep(1.5)
        assert _statuses(url) == {503}  # fairness still loading: no request let in yet
        fairness.start()
        assert _until(lambda: _statuses(url) == {200})
        fairness.stop()  # once up, a lost agent degrades answers: the chain stays in service …
        time.sleep(1.5)
        assert _statuses(url) == {200}
        aggregator.stop()  # … a lost aggregator does not
        assert _until(lambda: _statuses(url) == {503})
    finally:
        stop(proc)
        for s in (care, fairness, aggregator):
            s.stop()


def test_predictor_metrics(fake_predictor):
    url = fake_predictor()
    before = metric(url, "cmva_generated_tokens_total", {"adapter": "fairness"})
    body = {"instances": [{"question": "Is it fair to cut the queue?"}], "parameters": {"scores": False}}
    r = httpx.post(f"{url}/v1/models/agents:predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()["predictions"][0]["answers"]["fairness"]
    # the fake tokenizer counts words
    assert metric(url, "cmva_generated_tokens_total", {"adapter": "fairness"}) == before + len(answer.split())
    assert metric(url, "cmva_batcher_queue_depth") == 0
    assert "request_predict_seconds" in httpx.get(f"{url}/metrics", timeout=10).text  # KServe's own, beside ours
