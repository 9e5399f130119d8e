"""Injected faults (bench/reliability, parts b–e): an agent killed (b) or hung (e) under load, an S3 endpoint
cut during a publish (d), a local KFP run killed mid-stage and rerun (c)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cmva.serving.launcher import free_port_block, start_chain
from cmva.storage import ArtifactNotFoundError, LocalStore, S3Store, StorageError

ROOT = Path(__file__).resolve().parents[1]


# --- (b) one agent killed (or hung) under load -----------------------------------------------------------
def kill_agent_under_load(
    artifacts: Path,
    victim: str = "care",
    clients: int = 8,
    duration_s: float = 25.0,
    kill_at_s: float = 6.0,
    progress=None,
    sig: signal.Signals = signal.SIGKILL,
    agent_timeout_s: float = 30.0,
) -> dict:
    """`clients` threads send valid requests through the separate topology for duration_s; `victim` gets
    `sig` after kill_at_s once `clients` answers came back (at most halfway through). SIGSTOP hangs it
    (connections accepted, never answered: the transformer gives up after agent_timeout_s); it gets SIGCONT
    once the load is over, and one more request then shows whether it answers again."""
    body = {
        "instances": [{"question": "Should I tell my friend a hard truth?", "profile": {victim: 1.0, "fairness": 0.5}}],
        "parameters": {"max_new_tokens": 4},
    }
    t_start = time.time()
    port = free_port_block(8)
    with start_chain(
        str(artifacts),
        "separate",
        port,
        log_dir=artifacts / "serve-logs" / sig.name.lower(),
        agent_timeout_s=agent_timeout_s,
    ) as chain:
        startup_s = time.time() - t_start
        _answers_in_full(chain.url, body, 120.0)  # warm: a cold first request may outlast agent_timeout_s
        lock, records, killed_at = threading.Lock(), [], []
        t_load = time.time()
        stop = t_load + duration_s

        def client():
            with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as c:
                while time.time() < stop:
                    t0 = time.time()
                    try:
                        r = c.post(f"{chain.url}/v1/models/cmva:predict", json=body)
                        rec = {
                            "status": r.status_code,
                            "pred": r.json()["predictions"][0] if r.status_code == 200 else None,
                        }
                        rec["error"] = None if r.status_code == 200 else r.text[:300]
                    except (httpx.HTTPError, ValueError) as e:
                        rec = {"status": None, "pred": None, "error": f"{type(e).__name__}: {e}"}
                    rec |= {"t0": t0, "t1": time.time()}
                    with lock:
                        records.append(rec)
                    if progress is not None:
                        progress.update(1)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        # Kill at kill_at_s, or later once every client has had an answer (a cold chain is slow at first).
        while time.time() < t_load + duration_s / 2 and (time.time() < t_load + kill_at_s or len(records) < clients):
            time.sleep(0.1)
        chain.processes[victim].send_signal(sig)
        try:
            if sig == signal.SIGKILL:
                chain.processes[victim].wait()
            killed_at.append(time.time())
            for t in threads:
                t.join()
        finally:
            if sig == signal.SIGSTOP:
                chain.processes[victim].send_signal(signal.SIGCONT)
        resumed = _answers_in_full(chain.url, body, 60.0) if sig == signal.SIGSTOP else None
    k = killed_at[0]
    ok = [r for r in records if r["status"] == 200]
    degraded = [r for r in ok if r["pred"]["degraded"]]
    return {
        "topology": "separate",
        "signal": sig.name,
        "agent_timeout_s": agent_timeout_s,
        "clients": clients,
        "duration_s": duration_s,
        "killed": victim,
        "killed_after_s": round(k - t_load, 1),
        "startup_s": round(startup_s, 1),
        "total": len(records),
        "failed": len(records) - len(ok),
        "failed_examples": [r["error"] for r in records if r["status"] != 200][:5],
        "before_kill": sum(r["t1"] < k for r in records),
        "in_flight_at_kill": sum(r["t0"] < k <= r["t1"] for r in records),
        "after_kill": sum(r["t0"] >= k for r in records),
        "degraded": len(degraded),
        "degraded_missing_victim": sum(r["pred"]["missing"] == [victim] for r in degraded),
        "undegraded_after_kill": sum(r["t0"] >= k and not r["pred"]["degraded"] for r in ok),
        "degraded_before_kill": sum(r["t1"] < k for r in degraded),
        "p50_latency_s": round(sorted(r["t1"] - r["t0"] for r in ok)[len(ok) // 2], 3) if ok else None,
        "max_latency_s": round(max((r["t1"] - r["t0"] for r in records), default=0), 3),
    } | ({"answers_in_full_after_sigcont_s": resumed} if sig == signal.SIGSTOP else {})


def _answers_in_full(url: str, body: dict, within_s: float) -> float | None:
    """Seconds until the chain answers `body` without degrading (None: not within `within_s`)."""
    t0 = time.time()
    while time.time() < t0 + within_s:
        try:
            r = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=within_s)
            if r.status_code == 200 and not r.json()["predictions"][0]["degraded"]:
                return round(time.time() - t0, 1)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    return None


# --- (d) S3 endpoint cut during a publish ------------------------------------------------------------------
class CuttableProxy:
    """A loopback TCP proxy to `upstream_port` that can be cut (listener and every connection closed) and restarted."""

    def __init__(self, upstream_port: int):
        self.upstream, self.port = upstream_port, free_port_block(1)
        self.bytes_up, self.connections = 0, 0
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> CuttableProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                down, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed: cut
                return
            down.settimeout(None)
            up = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._socks |= {down, up}
                self.connections += 1
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if upstream:
                    self.bytes_up += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def s3_cut_during_publish(work: Path, n_files: int = 40, file_mb: int = 1, cut_fraction: float = 0.4) -> dict:
    """Publish through the proxy, cut it at `cut_fraction` of the bytes; check what moto itself then shows."""
    import logging

    from moto.server import ThreadedMotoServer

    from cmva.config import StorageSettings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    src = work / "s3-artifact"
    shutil.rmtree(work / "s3-artifact", ignore_errors=True)
    src.mkdir(parents=True)
    for i in range(n_files):
        (src / f"shard-{i:03d}.bin").write_bytes(os.urandom(file_mb << 20))
    moto_port = free_port_block(1)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port)
    moto.start()
    creds = dict(access_key="testing", secret_key="testing", region="us-east-1", max_retries=1, backoff_s=0.05)
    proxy = CuttableProxy(moto_port).start()
    via_proxy = S3Store(
        "s3://bench/reliability", StorageSettings(endpoint_url=f"http://127.0.0.1:{proxy.port}", **creds)
    )
    direct = S3Store(
        "s3://bench/reliability",
        StorageSettings(endpoint_url=f"http://127.0.0.1:{moto_port}", **creds),
        cache_dir=work / "s3-cache",
    )
    shutil.rmtree(work / "s3-cache", ignore_errors=True)
    out: dict = {"files": n_files, "file_mb": file_mb, "proxy": via_proxy.endpoint, "moto": direct.endpoint}
    try:
        threshold = cut_fraction * n_files * (file_mb << 20)

        def cutter():
            while proxy.bytes_up < threshold:
                time.sleep(0.01)
            out["cut_after_mb"] = round(proxy.bytes_up / 2**20, 1)
            proxy.cut()

        watcher = threading.Thread(target=cutter, daemon=True)
        watcher.start()
        t0 = time.time()
        try:
            via_proxy.publish(src, "artifact")
            out["first_publish"] = "succeeded (the cut came too late)"
        except StorageError as e:
            out["first_publish"] = f"{type(e).__name__}: {e}"
            out["error_type"] = type(e).__name__
            out["error_names_endpoint"] = via_proxy.endpoint in str(e)
        out["fail_after_s"] = round(time.time() - t0, 2)
        watcher.join(5)
        key = direct._key("artifact") + "/"
        out["objects_uploaded_before_cut"] = sum(
            1 for _ in direct.client.list_objects("bench", prefix=key, recursive=True)
        )
        out["visible_after_cut"] = direct.exists("artifact")
        try:
            direct.get("artifact")
            out["get_after_cut"] = "returned an artifact"
        except ArtifactNotFoundError as e:
            out["get_after_cut"] = f"ArtifactNotFoundError: {e}"
        proxy.start()  # the endpoint is back
        t0 = time.time()
        manifest = via_proxy.publish(src, "artifact")
        out["republish_s"] = round(time.time() - t0, 2)
        got = direct.get("artifact")  # verifies every sha256 against the manifest
        same = all(
            hashlib.sha256((got / rel).read_bytes()).hexdigest() == hashlib.sha256((src / rel).read_bytes()).hexdigest()
            for rel in manifest["files"]
        )
        out["republish"] = "succeeded"
        out["roundtrip_files"] = len(manifest["files"])
        out["roundtrip_checksums_ok"] = same and len(manifest["files"]) == n_files
    finally:
        try:
            proxy.cut()
        except Exception:  # noqa: BLE001 - already cut
            pass
        moto.stop()
        shutil.rmtree(src, ignore_errors=True)
    return out


# --- (c) local KFP run killed mid-stage, then rerun --------------------------------------------------------
def _pipeline(root: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, "-m", "cmva.cli", "pipeline", "run", "--local", "--profile", "smoke", "--root", str(root)]
    f = open(log, "w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _tasks(log: Path, pattern: str) -> list[str]:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    # kfp logs each task event once, as "12:51:19.296 - INFO - …" or (from its worker threads) "INFO root: …"
    return re.findall(r"^(?:[\d:.]+ - INFO - |INFO root: )" + pattern, plain, re.M)


def kfp_kill_and_rerun(work: Path, timeout_s: float = 900.0) -> dict:
    """Kill the local pipeline while an agent trains, rerun it: which stages come from the cache, and is
    every artifact the killed run left complete?"""
    root = work / "kfp"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    outputs = root / "smoke" / "outputs"
    t0 = time.time()
    proc = _pipeline(root, work / "kfp-first.log")
    while not list(outputs.glob("cmva-gs-*/train-agent*")):
        if proc.poll() is not None or time.time() - t0 > timeout_s:
            raise RuntimeError(
                f"the first run ended before an agent started: {(work / 'kfp-first.log').read_text()[-2000:]}"
            )
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after_s = time.time() - t0
    first = next(outputs.glob("cmva-gs-*"))
    finished_first = _tasks(work / "kfp-first.log", r"Task '([a-z0-9-]+)' finished with status")
    agents = list(first.glob("train-agent*/agent"))
    incomplete = [
        str(a.relative_to(root))
        for a in agents
        if not ((a / "adapter_model.safetensors").is_file() and (a / "summary.json").is_file())
    ]
    if not (first / "import-base" / "base" / "model.safetensors").is_file():
        incomplete.append("import-base/base")
    partial_scratch = [str(p.relative_to(root)) for p in first.rglob(".tmp-*")]

    t1 = time.time()
    rerun = _pipeline(root, work / "kfp-rerun.log")
    try:
        rc = rerun.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(rerun.pid, signal.SIGKILL)
        rc = rerun.wait()
    executed = _tasks(work / "kfp-rerun.log", r"Executing task '([a-z0-9-]+)'")
    reused = list(finished_first)
    for t in executed:
        if t in reused:
            reused.remove(t)
    serving = sorted(d for d in (root / "smoke" / "serving").glob("*") if d.name != "channels") if rc == 0 else []
    verified = []
    if serving:
        names = ["base", "rewards", "aggregator"] + [f"agents/{d.name}" for d in (serving[-1] / "agents").iterdir()]
        store = LocalStore(serving[-1])
        verified = [n for n in names if store.get(n)]  # get() checks every sha256 against the manifest
    report = sorted(outputs.glob("cmva-gs-*/evaluate/report/report.json"))
    return {
        "killed_after_s": round(killed_after_s, 1),
        "finished_before_kill": finished_first,
        "agent_dirs_left_by_killed_run": len(agents),
        "incomplete_artifacts": incomplete,
        "partial_scratch_dirs": partial_scratch,
        "evaluate_ran_before_kill": (first / "evaluate").exists(),
        "rerun_rc": rc,
        "rerun_log_tail": "" if rc == 0 else (work / "kfp-rerun.log").read_text(errors="replace")[-1500:],
        "rerun_s": round(time.time() - t1, 1),
        "rerun_executed": executed,
        "reused": reused,
        "serving_versions": len(serving),
        "serving_verified": verified,
        "report_written": bool(report) and "rouge" in json.loads(report[-1].read_text()),
    }
