"""Serving fixtures: the packed chain on the smoke artifacts (once per session), fake predictors with set
delays, stand-in predictors in this process, a transformer in front of them."""

from __future__ import annotations

import pytest

from cmva.serving.launcher import free_port_block, start_chain
from tests.conftest import free_port
from tests.serving.stubs import StubPredictor, good_answer, spawn, stop, wait_http


@pytest.fixture(scope="session")
def packed(smoke_run, tmp_path_factory):
    out, _, _ = smoke_run
    with start_chain(str(out), "packed", free_port_block(3), log_dir=tmp_path_factory.mktemp("logs")) as chain:
        yield chain


@pytest.fixture
def fake_predictor(tmp_path):
    """fake_predictor(*args, values=...) → URL of a tests.serving.fake_predictor server, stopped after the test."""
    procs = []

    def start(*args: str, values: str = "care,fairness") -> str:
        port = free_port()
        log = tmp_path / f"fake-predictor-{port}.log"
        argv = ["--http_port", str(port), "--host", "127.0.0.1", "--values", values, *args]
        procs.append(spawn(argv, log, module="tests.serving.fake_predictor"))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/health/ready", procs[-1], log)
        return url

    yield start
    for p in procs:
        stop(p)


def start_transformer(tmp_path, agents: dict[str, str], aggregator: str, *args: str, wait: str = "ready"):
    """A cmva transformer (values care,fairness) routing to `agents` {value: URL} and `aggregator` (URL):
    (URL, process). `wait`: "ready" (its predictors too) or "live"."""
    port = free_port()
    log = tmp_path / f"transformer-{port}.log"
    argv = [
        *("--model_name", "cmva", "--values", "care,fairness", "--http_port", str(port), "--host", "127.0.0.1"),
        *("--agents", ",".join(f"{v}={u}" for v, u in agents.items())),
        *("--predictor_host", aggregator.removeprefix("http://"), "--predictor_protocol", "v1"),
        *args,
    ]
    proc = spawn(argv, log, role="transformer")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v2/health/{wait}", proc, log)
    return url, proc


def start_stub_transformer(stub_servers: dict, tmp_path, *args: str):
    """A transformer in front of the stand-in predictors (care, fairness, aggregator), 5 s agent timeout: (URL, process)."""
    s = stub_servers
    agents = {"care": s["care"].url, "fairness": s["fairness"].url}
    return start_transformer(tmp_path, agents, s["aggregator"].url, "--agent_timeout_s", "5", *args)


@pytest.fixture(scope="module")
def stub_servers():
    """Stand-in predictors on loopback for a module: care, fairness, aggregator."""
    started = {name: StubPredictor(free_port()).start() for name in ("care", "fairness", "aggregator")}
    yield started
    for s in started.values():
        s.stop()


@pytest.fixture
def stubs(stub_servers):
    """The module's stand-in predictors, healthy again after the test (which may change them)."""
    yield stub_servers
    for s in stub_servers.values():
        if s._server is None:
            s.start()
        s.delay_s, s.answer = 0.0, good_answer
        s.requests.clear()
