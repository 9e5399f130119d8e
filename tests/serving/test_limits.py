"""Issue 13, item 6: a body-size limit before parsing (413, a 50 MB body is not read), a per-request work
budget (400 naming the field), predictors validating their own inputs (400 naming the field, not 500)."""

from __future__ import annotations

import select
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

MB = 1 << 20
CHUNK = b"x" * (64 * 1024)


def _raw_post(url: str, path: str, headers: dict[str, str], body_chunks, timeout: float = 15.0) -> tuple[int, bytes]:
    """POST over a plain socket, sending `body_chunks` only until the server answers; (status, response)."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: {u.hostname}\r\ncontent-type: application/json\r\n"
        s.sendall((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        for chunk in body_chunks:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered before the body was sent
            try:
                s.sendall(chunk)
            except OSError:
                break
        deadline, response = time.time() + timeout, b""
        while b"\r\n\r\n" not in response and time.time() < deadline:
            if select.select([s], [], [], 0.5)[0]:
                data = s.recv(65536)
                if not data:
                    break
                response += data
    assert response, "no answer: the server waited for the rest of the body"
    return int(response.split()[1]), response


def _oversized(total: int):
    """A declared-length body of which only the first 256 kB is ever offered."""
    sent = 0
    while sent < min(total, 256 * 1024):
        sent += len(CHUNK)
        yield CHUNK


def _chunked(total: int):
    for _ in range(total // len(CHUNK)):
        yield b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"


@pytest.mark.parametrize(
    "server, path", [("transformer", "/v1/models/cmva:predict"), ("packed", "/v1/models/agents:predict")]
)
def test_declared_50mb_body_gets_413_before_it_is_read(packed, server, path):
    url = f"http://127.0.0.1:{packed.ports[server]}"
    status, response = _raw_post(url, path, {"content-length": str(50 * MB)}, _oversized(50 * MB))
    assert status == 413, response[:300]
    assert b"Too Large" in response


@pytest.mark.parametrize(
    "server, path", [("transformer", "/v1/models/cmva:predict"), ("packed", "/v1/models/agents:predict")]
)
def test_chunked_body_past_the_limit_gets_413_without_its_end(packed, server, path):
    url = f"http://127.0.0.1:{packed.ports[server]}"
    # 4 MB offered, never terminated: a server that waits for the end of the body never answers.
    status, response = _raw_post(url, path, {"transfer-encoding": "chunked"}, _chunked(4 * MB))
    assert status == 413, response[:300]


def test_work_budget_refuses_a_request_naming_the_field(packed):
    instance = {"question": "Is it fine to lie to protect a friend?", "profile": {v: 1.0 for v in _values()}}
    body = {"instances": [instance] * 16, "parameters": {"max_new_tokens": 512}}
    t0 = time.time()
    r = httpx.post(f"{packed.url}/v1/models/cmva:predict", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("parameters.max_new_tokens:") and "budget" in r.json()["error"]
    assert time.time() - t0 < 10  # refused before any generation (16 × 6 × 512 tokens would take minutes)
    agents = {"instances": [{"question": "q?"}] * 16, "parameters": {"max_new_tokens": 512}}
    r = httpx.post(f"http://127.0.0.1:{packed.ports['packed']}/v1/models/agents:predict", json=agents, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("parameters.max_new_tokens:"), r.text


def _values():
    return ["care", "fairness", "loyalty", "authority", "sanctity"]


@pytest.mark.parametrize(
    "model, body, field",
    [
        ("agents", {"instances": [{"question": "q?", "values": 5}]}, "instances.0.values"),
        ("agents", {"instances": [{"question": "q?", "values": ["greed"]}]}, "instances.0.values"),
        ("agents", {"instances": [{"question": "q?", "values": [{"care": 1}]}]}, "instances.0.values.0"),
        ("agents", {"instances": [{"values": ["care"]}]}, "instances.0.question"),
        ("agents", {"instances": [{"question": 7}]}, "instances.0.question"),
        ("agents", {"instances": [{"question": "q?"}], "parameters": {"max_new_tokens": "lots"}}, "parameters"),
        ("agents", {"instances": "all of them"}, "instances"),
        ("agents", [{"question": "q?"}], "body"),
        ("cmva", {"instances": [{"question": "q?", "profile": {"care": "x"}}]}, "instances.0.profile"),
        ("cmva", {"instances": [{"question": "q?", "profile": [1, 2]}]}, "instances.0.profile"),
        ("cmva", {"instances": [{"question": "q?", "profile": {"care": 1}, "answers": 5}]}, "instances.0.answers"),
        ("cmva", {"instances": [{"question": "q?", "profile": {"care": 1}, "answers": {"care": 5}}]}, "answers"),
        ("cmva", {"instances": [{"question": "q?"}]}, "instances.0.profile"),
    ],
)
def test_predictors_validate_their_own_inputs(packed, model, body, field):
    url = f"http://127.0.0.1:{packed.ports['packed']}/v1/models/{model}:predict"
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_v2_profile_nested_100k_deep_gets_400(packed):
    body = {
        "inputs": [
            {"name": "question", "shape": [1], "datatype": "BYTES", "data": ["q?"]},
            {"name": "profile", "shape": [1], "datatype": "BYTES", "data": ["[" * 100_000 + "]" * 100_000]},
        ]
    }
    r = httpx.post(f"{packed.url}/v2/models/cmva/infer", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("inputs.profile.0")


@pytest.mark.parametrize(
    "model, content, field",
    [
        (
            "agents",
            '{"instances": [{"question": "q?", "values": ["care"]}], "parameters": {"temperature": NaN}}',
            "temperature",
        ),
        ("cmva", '{"instances": [{"question": "q?", "profile": {"care": -Infinity}}]}', "instances.0.profile.care"),
    ],
)
def test_predictors_name_the_field_of_a_non_json_number(packed, model, content, field):
    """Found by bench/reliability at 21980e9: the predictors answered KServe's position-only 400."""
    url = f"http://127.0.0.1:{packed.ports['packed']}/v1/models/{model}:predict"
    r = httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]
