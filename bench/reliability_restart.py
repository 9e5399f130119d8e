"""The packed predictor SIGKILLed under load and started again (bench/reliability, part f): only 503s while it
is down (no other status, no hang), full answers once it is back, and how long that took."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx

from bench.reliability_chaos import QUESTIONS, base_urls, v1_body
from cmva.serving.launcher import Chain


def _respawn(chain: Chain, name: str) -> subprocess.Popen:
    """Start server `name` again with the command it was started with (cmva.serving.launcher._spawn)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    log = open(chain.logs / f"{name}-restarted.log", "w")
    proc = subprocess.Popen(chain.processes[name].args, stdout=log, stderr=subprocess.STDOUT, env=env)
    chain.processes[name] = proc  # chain.stop() stops the new one
    return proc


def restart_predictor(
    chain: Chain,
    values: list[str],
    clients: int = 8,
    kill_at_s: float = 8.0,
    down_s: float = 8.0,
    after_s: float = 15.0,
    hang_s: float = 20.0,
    progress=None,
) -> dict:
    """`clients` send requests through the packed chain; the predictor is SIGKILLed, left down `down_s`,
    started again; the load goes on `after_s` past the first answer after the restart. While it is down
    every answer must be 503 (no other status, no transport error, none slower than `hang_s`); after it,
    every answer must be a full one (200, not degraded)."""
    profile = {"care": 1.0, "fairness": 0.5}
    lock, records, stop = threading.Lock(), [], threading.Event()
    ready_log: list[tuple[float, bool]] = []

    def client(k: int) -> None:
        body = v1_body(QUESTIONS[k % len(QUESTIONS)], profile)
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as c:
            while not stop.is_set():
                t0 = time.time()
                rec = {"client": k, "t0": t0, "status": None, "degraded": None, "answer": None, "retry_after": None}
                try:
                    r = c.post(f"{chain.url}/v1/models/cmva:predict", json=body)
                    rec["status"], rec["retry_after"] = r.status_code, r.headers.get("retry-after")
                    if r.status_code == 200:
                        pred = r.json()["predictions"][0]
                        rec["degraded"], rec["answer"] = pred["degraded"], pred["answer"]
                    else:
                        rec["error"] = r.text[:200]
                except (httpx.HTTPError, ValueError) as e:
                    rec["error"] = f"{type(e).__name__}: {e}"
                rec["t1"] = time.time()
                with lock:
                    records.append(rec)
                if progress is not None:
                    progress.update(1)
                if rec["status"] == 503:
                    time.sleep(0.5)  # a client honouring Retry-After, a little sooner

    def ready() -> bool:
        try:
            return httpx.get(f"{chain.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t_load = time.time()
    for t in threads:
        t.start()
    try:
        while time.time() < t_load + kill_at_s or sum(r["status"] == 200 for r in records) < clients:
            if time.time() > t_load + 180:
                break  # no answers at all: the figures will show it
            time.sleep(0.1)
        victim = chain.processes["packed"]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        t_kill = time.time()
        while time.time() < t_kill + down_s:
            ready_log.append((time.time(), ready()))
            time.sleep(0.5)
        t_restart = time.time()
        proc = _respawn(chain, "packed")
        predictor = f"{base_urls(chain)['packed']}/v1/models/agents"
        recovered = predictor_ready = None
        while (recovered is None or predictor_ready is None) and time.time() < t_restart + 300 and proc.poll() is None:
            ready_log.append((time.time(), ready()))
            if predictor_ready is None:
                try:
                    if httpx.get(predictor, timeout=2).json().get("ready") is True:
                        predictor_ready = time.time()
                except (httpx.HTTPError, ValueError):
                    pass
            with lock:
                ok = [r["t1"] for r in records if r["status"] == 200 and r["t0"] > t_kill]
            recovered = min(ok) if ok else None
            time.sleep(0.25)
        time.sleep(after_s)
    finally:  # the clients stop even if the restart went wrong
        stop.set()
        for t in threads:
            t.join()
    return summarize_restart(records, ready_log, t_load, t_kill, t_restart, recovered, hang_s) | {
        "clients": clients,
        "restart_rc": proc.poll(),
        "restart_log": str(chain.logs / "packed-restarted.log"),
        "predictor_ready_after_restart_s": round(predictor_ready - t_restart, 1) if predictor_ready else None,
    }


def summarize_restart(records, ready_log, t_load, t_kill, t_restart, recovered, hang_s) -> dict:
    """The figures of restart_predictor from its request records (t0, t1, status, degraded, answer).

    Windows: before the kill (answered before it); the outage (answered after the kill, before the first
    full answer after the restart: only 503 is right); in flight at the recovery (sent before it, answered
    after: 200 or 503); after the recovery (sent after it: full answers only)."""
    rec_t = recovered or float("inf")
    before = [r for r in records if r["t1"] < t_kill]
    outage = [r for r in records if t_kill <= r["t1"] < rec_t]
    straddling = [r for r in records if r["t0"] < rec_t <= r["t1"] and r["t1"] >= t_kill]
    after = [r for r in records if r["t0"] >= rec_t]
    wrong = [r for r in outage if r["status"] != 503] + [r for r in straddling if r["status"] not in (200, 503)]
    answers_before = {}
    for r in before:
        if r["status"] == 200:
            answers_before.setdefault(r["client"], r["answer"])
    full = [r for r in after if r["status"] == 200 and r["degraded"] is False]

    def statuses(rs) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rs:
            out[str(r["status"])] = out.get(str(r["status"]), 0) + 1
        return out

    return {
        "killed_after_s": round(t_kill - t_load, 1),
        "down_s": round(t_restart - t_kill, 1),
        "recovered_after_kill_s": round(recovered - t_kill, 1) if recovered else None,
        "recovered_after_restart_s": round(recovered - t_restart, 1) if recovered else None,
        "total": len(records),
        "before_kill": len(before),
        "before_kill_failed": sum(r["status"] != 200 for r in before),
        "during_outage": len(outage),
        "during_outage_status": statuses(outage),
        "in_flight_at_recovery_status": statuses(straddling),
        "during_outage_other": len(wrong),
        "during_outage_other_examples": [f"{r['status']}: {r.get('error')}" for r in wrong][:3],
        "during_outage_503_without_retry_after": sum(r["status"] == 503 and not r["retry_after"] for r in outage),
        "hung": sum(r["t1"] - r["t0"] > hang_s for r in records),
        "hang_threshold_s": hang_s,
        "max_outage_latency_s": round(max((r["t1"] - r["t0"] for r in outage), default=0), 2),
        "after_recovery": len(after),
        "after_recovery_full": len(full),
        "after_recovery_failed": len(after) - len(full),
        "after_recovery_same_answer_as_before_kill": sum(
            r["answer"] == answers_before.get(r["client"]) for r in full if r["client"] in answers_before
        ),
        "transformer_ready_while_down": sum(ok for t, ok in ready_log if t < rec_t),
        "transformer_ready_probes_while_down": sum(t < rec_t for t, _ in ready_log),
    }
