"""Serving faults on a running chain (bench/reliability, parts g–i): a 50 MB body, model unload/load attempts,
a cancel storm (clients that disconnect mid-request).

Each function takes a started chain (cmva.serving.launcher.start_chain) and returns the part's figures.
"""

from __future__ import annotations

import random
import re
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil

from cmva.serving.launcher import Chain

MB = 1 << 20
QUESTIONS = [
    "Should I tell my friend a hard truth?",
    "Is it fair to keep a found wallet?",
    "May I skip a family dinner to rest?",
    "Should I report a colleague who cuts corners?",
]


def v1_body(question: str, profile: dict[str, float], max_new_tokens: int = 4, min_new_tokens: int = 0) -> dict:
    params = {"max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens}
    return {"instances": [{"question": question, "profile": profile}], "parameters": params}


def base_urls(chain: Chain) -> dict[str, str]:
    host = urlparse(chain.url).hostname
    return {name: f"http://{host}:{port}" for name, port in chain.ports.items()}


def served_models(chain: Chain, model: str = "cmva") -> list[tuple[str, str]]:
    """(server, model name) of every model the chain serves: the transformer's and its predictors'."""
    if "packed" in chain.processes:
        return [("transformer", model), ("packed", "agents"), ("packed", model)]
    agents = [(name, name) for name in chain.processes if name not in ("transformer", "aggregator")]
    return [("transformer", model), ("aggregator", model), *agents]


def chain_answers(chain: Chain, values: list[str], n: int = 1) -> list[dict]:
    """`n` requests through the chain asking every value: status, degraded, missing."""
    out = []
    for k in range(n):
        body = v1_body(QUESTIONS[k % len(QUESTIONS)], dict.fromkeys(values, 1.0))
        try:
            r = httpx.post(f"{chain.url}/v1/models/cmva:predict", json=body, timeout=120)
            pred = r.json()["predictions"][0] if r.status_code == 200 else {}
            out.append({"status": r.status_code, "degraded": pred.get("degraded"), "missing": pred.get("missing")})
        except (httpx.HTTPError, ValueError) as e:
            out.append({"status": None, "error": f"{type(e).__name__}: {e}"})
    return out


def _ok(answers: list[dict]) -> bool:
    return all(a["status"] == 200 and a["degraded"] is False for a in answers)


# --- (g) a 50 MB body ----------------------------------------------------------------------------------
class PeakRss:
    """Resident memory of a process before, at its peak (sampled every `every_s`) and after a block."""

    def __init__(self, pid: int, every_s: float = 0.005):
        self.proc, self.every_s = psutil.Process(pid), every_s
        self.before = self.peak = self.after = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.2)  # let a late allocation show
        self._stop.set()
        self._thread.join()
        self.after = self.proc.memory_info().rss
        self.peak = max(self.peak, self.after)


def post_big(url: str, path: str, total: int, chunked: bool, timeout_s: float = 30.0) -> dict:
    """POST a `total`-byte body over a plain socket, sending until the server answers (as curl does);
    the status, the bytes sent before the answer and the seconds it took."""
    u = urlparse(url)
    chunk = b"x" * (64 * 1024)
    head = f"POST {path} HTTP/1.1\r\nHost: {u.hostname}\r\ncontent-type: application/json\r\n"
    head += "transfer-encoding: chunked\r\n\r\n" if chunked else f"content-length: {total}\r\n\r\n"
    sent, response, t0 = 0, b"", time.time()
    with socket.create_connection((u.hostname, u.port), timeout=timeout_s) as s:
        s.sendall(head.encode())
        try:
            while sent < total and not select.select([s], [], [], 0)[0]:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked and sent >= total:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: its answer may still be readable
        deadline = time.time() + timeout_s
        while b"\r\n\r\n" not in response and time.time() < deadline:
            if select.select([s], [], [], 0.5)[0]:
                try:
                    data = s.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                response += data
    status = int(response.split()[1]) if response.startswith(b"HTTP/") else None
    return {"status": status, "sent_mb": round(sent / MB, 2), "answer_s": round(time.time() - t0, 2)}


def big_body(chain: Chain, values: list[str], mb: int = 50) -> dict:
    """A `mb` MB body to each endpoint of the transformer and to the packed predictor: 413, RSS growth."""
    urls = base_urls(chain)
    predictor = "packed" if "packed" in chain.processes else values[0]
    model = "agents" if predictor == "packed" else predictor
    targets = [
        ("transformer", "/v1/models/cmva:predict", False),
        ("transformer", "/v1/models/cmva:predict", True),
        ("transformer", "/v2/models/cmva/infer", False),
        ("transformer", "/openai/v1/chat/completions", False),
        (predictor, f"/v1/models/{model}:predict", False),
    ]
    attempts = []
    for server, path, chunked in targets:
        with PeakRss(chain.processes[server].pid) as rss:
            res = post_big(urls[server], path, mb * MB, chunked)
        attempts.append(
            {"server": server, "path": path, "body": "chunked" if chunked else "content-length", **res}
            | {"rss_before_mb": round(rss.before / MB, 1), "rss_growth_mb": round((rss.peak - rss.before) / MB, 1)}
        )
    transformer = [a for a in attempts if a["server"] == "transformer"]
    after = chain_answers(chain, values)
    return {
        "body_mb": mb,
        "attempts": attempts,
        "all_413": all(a["status"] == 413 for a in attempts),
        "max_sent_mb": max(a["sent_mb"] for a in attempts),
        "transformer_rss_growth_mb": max(a["rss_growth_mb"] for a in transformer),
        "predictor_rss_growth_mb": max(a["rss_growth_mb"] for a in attempts if a["server"] != "transformer"),
        "answers_after": after,
        "answers_after_ok": _ok(after),
    }


# --- (h) model repository load/unload -------------------------------------------------------------------
def unload_attempts(chain: Chain, values: list[str], topology: str) -> dict:
    """POST load and unload for every model of every server; then each model is still ready and the chain
    answers every value without degrading."""
    urls, attempts = base_urls(chain), []
    for server, model in served_models(chain):
        for action in ("unload", "load"):
            r = httpx.post(f"{urls[server]}/v2/repository/models/{model}/{action}", timeout=30)
            try:
                error = r.json().get("error")
            except ValueError:
                error = r.text[:200]
            ready = httpx.get(f"{urls[server]}/v1/models/{model}", timeout=30)
            attempts.append(
                {"topology": topology, "server": server, "model": model, "action": action, "status": r.status_code}
                | {"error": error, "ready_after": ready.status_code == 200 and ready.json().get("ready") is True}
            )
    after = chain_answers(chain, values, 2)
    return {"attempts": attempts, "answers_after": after, "answers_after_ok": _ok(after)}


def merge_unload(parts: list[dict]) -> dict:
    attempts = [a for p in parts for a in p["attempts"]]
    return {
        "attempts": attempts,
        "total": len(attempts),
        "refused_403": sum(a["status"] == 403 for a in attempts),
        "not_ready_after": sum(not a["ready_after"] for a in attempts),
        "answers_after_ok": all(p["answers_after_ok"] for p in parts),
        "answers_after": [a for p in parts for a in p["answers_after"]],
    }


# --- (i) cancel storm -------------------------------------------------------------------------------------
SERVER_500 = re.compile(r"Exception in ASGI application|exception_handler\(\):|Traceback \(most recent call last\)")


def _tracebacks(logs: Path | None) -> int:
    return sum(len(SERVER_500.findall(p.read_text(errors="replace"))) for p in logs.glob("*.log")) if logs else 0


def prometheus(url: str, name: str) -> float | None:
    """Sum of a metric's samples on a server's /metrics (None when it does not export it)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
    return sum(map(float, found)) if found else None


def cancel_storm(
    chain: Chain,
    values: list[str],
    storm: int = 240,
    concurrency: int = 48,
    timeouts_s: tuple[float, float] = (0.02, 1.5),
    after: int = 24,
    after_clients: int = 8,
) -> dict:
    """`storm` requests, `concurrency` at a time, each given up after a random timeout (its connection
    closed mid-request): to the transformer (V1 and OpenAI) and straight to an agent predictor; then
    `after` ordinary requests from `after_clients` clients must all answer in full."""
    urls = base_urls(chain)
    predictor = "packed" if "packed" in chain.processes else values[0]
    model = "agents" if predictor == "packed" else predictor
    profile = dict.fromkeys(values, 1.0)
    # 32 tokens each (min = max): long enough that most callers leave while their jobs are queued or generating
    targets = [
        (f"{chain.url}/v1/models/cmva:predict", v1_body(QUESTIONS[0], profile, 32, 32)),
        (
            f"{chain.url}/openai/v1/chat/completions",
            {"messages": [{"role": "user", "content": QUESTIONS[1]}], "profile": profile, "max_tokens": 32},
        ),
        (
            f"{urls[predictor]}/v1/models/{model}:predict",
            {"instances": [{"question": QUESTIONS[2]}], "parameters": {"max_new_tokens": 32, "min_new_tokens": 32}},
        ),
    ]
    rng = random.Random(13)
    plan = [(targets[k % len(targets)], rng.uniform(*timeouts_s)) for k in range(storm)]
    tracebacks_before = _tracebacks(chain.logs)

    def leave_early(item) -> str:
        (url, body), timeout = item
        try:
            r = httpx.post(url, json=body, timeout=timeout)
            return str(r.status_code)
        except httpx.TimeoutException:
            return "gave_up"
        except httpx.HTTPError as e:
            return type(e).__name__

    t0 = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(leave_early, plan))
    storm_s = time.time() - t0

    def ordinary(k: int) -> dict:
        t = time.time()
        ans = chain_answers(chain, values, 1)[0]
        return ans | {"latency_s": round(time.time() - t, 2), "client": k % after_clients}

    t1 = time.time()
    with ThreadPoolExecutor(after_clients) as pool:
        normal = list(pool.map(ordinary, range(after)))
    after_s = time.time() - t1
    predictors = [name for name in chain.processes if name != "transformer"]
    return {
        "storm": storm,
        "concurrency": concurrency,
        "client_timeouts_s": list(timeouts_s),
        "storm_s": round(storm_s, 1),
        "storm_outcomes": {k: outcomes.count(k) for k in sorted(set(outcomes))},
        "storm_5xx": sum(o.isdigit() and int(o) >= 500 for o in outcomes),
        "after": after,
        "after_clients": after_clients,
        "after_failed": sum(a["status"] != 200 for a in normal),
        "after_degraded": sum(a["status"] == 200 and a["degraded"] is not False for a in normal),
        "after_failed_examples": [a for a in normal if a["status"] != 200][:3],
        "after_s": round(after_s, 1),
        "after_max_latency_s": max(a["latency_s"] for a in normal),
        "queue_depth_after": {p: prometheus(urls[p], "cmva_batcher_queue_depth") for p in predictors},
        "server_tracebacks": _tracebacks(chain.logs) - tracebacks_before,
    }
