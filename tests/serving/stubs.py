"""Helpers for serving tests: stand-in predictors in this process, cmva servers as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def good_answer(model: str, body: dict) -> tuple[int, object]:
    """What a healthy predictor answers: agents one answer per requested value, the aggregator one answer."""
    preds = []
    for inst in body["instances"]:
        if "profile" in inst:
            preds.append({"answer": "aggregated from " + ",".join(sorted(inst.get("answers", {})))})
        else:
            vals = inst.get("values") or [model]
            preds.append({"answers": {v: f"{v} says: {inst['question']}" for v in vals}, "scores": {}})
    return 200, {"predictions": preds}


class _Handler(BaseHTTPRequestHandler):
    """Quiet; `_reply` sends bytes as they are and anything else as JSON, and lets a caller that gave up go."""

    def log_message(self, *a):
        pass

    def _reply(self, status: int, obj: object = b"", ctype: str = "application/json"):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the caller gave up
            pass


class _Loopback:
    """An HTTP server on a loopback port, served by a thread of this process."""

    def __init__(self, port: int):
        self.port = port
        self.requests: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, handler: type[BaseHTTPRequestHandler]):
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class StubPredictor(_Loopback):
    """A predictor on loopback: `GET /v1/models/<m>` ready, `POST /v1/models/<m>:predict` → `answer(model,
    body)` = (status, JSON object or raw bytes), after `delay_s`. Counts predict requests per model."""

    def __init__(self, port: int, answer: Callable[[str, dict], tuple[int, object]] = good_answer):
        super().__init__(port)
        self.answer, self.delay_s = answer, 0.0

    def start(self) -> StubPredictor:
        stub = self

        class Handler(_Handler):
            def do_GET(self):
                model = self.path.rsplit("/", 1)[-1]
                self._reply(200, {"name": model, "ready": True})

            def do_POST(self):
                model = self.path.split("/v1/models/", 1)[-1].removesuffix(":predict")
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                stub.requests[model] += 1
                time.sleep(stub.delay_s)
                self._reply(*stub.answer(model, body))

        return self._serve(Handler)


def spawn(args: list[str], log: Path, module: str | None = None, role: str | None = None) -> subprocess.Popen:
    """A cmva server role (`main_<role>` of cmva.serving.servers) or a `python -m module` as a subprocess."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if module:
        cmd = [sys.executable, "-m", module, *args]
    else:
        cmd = [sys.executable, "-c", f"from cmva.serving.servers import main_{role}; main_{role}()", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0, status: int | None = 200) -> None:
    """Until GET url answers `status` (None: any answer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if status is None or httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the server's Prometheus `/metrics` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return 0.0


class VllmPaths(_Loopback):
    """vLLM's own server's paths in front of a cmva predictor, on loopback: `GET /health` → 200 with an empty body
    (503 once `healthy` is False), `POST /v1/chat/completions` → the predictor's `/openai/v1/chat/completions`, its
    answer (or its stream's first text delta) given the leading space vLLM's answers begin with. Counts requests
    per path."""

    def __init__(self, port: int, predictor: str):
        super().__init__(port)
        self.predictor, self.healthy = predictor, True

    def start(self) -> VllmPaths:
        paths = self

        class Handler(_Handler):
            def do_GET(self):
                paths.requests[self.path] += 1
                self._reply(404 if self.path != "/health" else 200 if paths.healthy else 503)

            def do_POST(self):
                paths.requests[self.path] += 1
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/chat/completions":
                    return self._reply(404)
                r = httpx.post(f"{paths.predictor}/openai/v1/chat/completions", content=body, timeout=300,
                               headers={"content-type": "application/json"})  # fmt: skip
                ctype = r.headers.get("content-type", "application/json")
                data = r.content
                if r.status_code == 200 and ctype.startswith("application/json"):
                    c = r.json()  # vLLM's answer keeps its first token's leading space
                    c["choices"][0]["message"]["content"] = " " + c["choices"][0]["message"]["content"]
                    data = json.dumps(c).encode()
                elif r.status_code == 200:  # streamed: so does its first text delta
                    data = _space_first_delta(r.text).encode()
                self._reply(r.status_code, data, ctype)

        return self._serve(Handler)


def _space_first_delta(sse: str) -> str:
    """A chat-completions event stream with a space before its first text delta."""
    lines = sse.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line.removeprefix("data: "))
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            chunk["choices"][0]["delta"]["content"] = " " + chunk["choices"][0]["delta"]["content"]
            lines[i] = "data: " + json.dumps(chunk)
            break
    return "\n".join(lines)
