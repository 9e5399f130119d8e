"""`cmva serve`: the whole serving chain as real KServe model servers on loopback ports.

One process per InferenceService of the topology:
- separate: one predictor per agent (ports N+2…), the aggregator predictor (N+1), the transformer (N);
- packed: one predictor with the base model, every agent adapter and the aggregator (N+1), the transformer (N).
Every server binds `host` (127.0.0.1 unless told otherwise). SIGTERM to the launching process stops them all
(`stop_on_sigterm`), as Ctrl-C does.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class Chain:
    url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    logs: Path | None = None

    def stop(self, timeout: float = 20.0) -> None:
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        for p in self.processes.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def free_port_block(n: int) -> int:
    """A port P with P … P+n-1 free on loopback, from a random start (concurrent runs do not race for one block)."""
    start = random.randrange(20000, 40000, 50)
    for base in range(start, start + 20000, 50):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports on loopback")


def stop_on_sigterm() -> None:
    """Turn SIGTERM (timeout, systemd, a container runtime) into SystemExit, so that `with chain:` and
    start_chain's own cleanup stop the servers instead of leaving them running on their ports."""

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def connect_host(host: str) -> str:
    """Where to reach a server bound to `host` (a wildcard address is reached on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _spawn(role: str, args: list[str], log_dir: Path, name: str, bind: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    code = f"from cmva.serving.servers import main_{role}; main_{role}()"
    log = open(log_dir / f"{name}.log", "w")
    cmd = [sys.executable, "-c", code, *args, "--host", bind]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(url: str, model: str, proc: subprocess.Popen, timeout: float = 180.0, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.is_file() else ""
            raise RuntimeError(f"server for {model} exited with {proc.returncode}:\n{tail}")
        try:
            r = httpx.get(f"{url}/v1/models/{model}", timeout=2.0)
            if r.status_code == 200 and r.json().get("ready"):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{model} at {url} not ready after {timeout:.0f} s")


def start_chain(
    artifacts: str,
    topology: str = "packed",
    port: int = 8080,
    values: list[str] | None = None,
    log_dir: str | Path | None = None,
    model_name: str = "cmva",
    agent_timeout_s: float = 120.0,
    host: str = "127.0.0.1",
    dtype: str | None = None,
) -> Chain:
    """Start every server of the topology, wait until all are ready; returns the chain (URL of the transformer).
    `dtype`: the predictors' base model's (`--dtype`; bfloat16 on a CPU with native bf16, cmva.models.generation_dtype);
    None: the base's own (cmva.decoding)."""
    from cmva.values import resolve_values

    if topology not in ("packed", "separate"):
        raise ValueError(f"topology must be packed or separate, got {topology!r}")
    values = [v.name for v in resolve_values(values)]
    logs = (
        Path(log_dir or Path(artifacts) / "serve-logs")
        if not str(artifacts).startswith("s3://")
        else Path(log_dir or "serve-logs")
    )
    logs.mkdir(parents=True, exist_ok=True)
    bind, host = host, connect_host(host)
    chain = Chain(url=f"http://{host}:{port}", logs=logs)
    vals = ",".join(values)
    dtype_args = ["--dtype", dtype] if dtype else []
    try:
        if topology == "packed":
            chain.ports["packed"] = port + 1
            chain.processes["packed"] = _spawn(
                "agent",
                [
                    "--artifacts",
                    str(artifacts),
                    "--values",
                    vals,
                    "--with_aggregator",
                    *dtype_args,
                    "--model_name",
                    model_name,
                    "--http_port",
                    str(port + 1),
                ],
                logs,
                "packed",
                bind,
            )
            routes, predictor = f"packed=http://{host}:{port + 1}", f"{host}:{port + 1}"
            waits = [("packed", "agents"), ("packed", model_name)]
        else:
            chain.ports["aggregator"] = port + 1
            chain.processes["aggregator"] = _spawn(
                "aggregator",
                [
                    "--artifacts",
                    str(artifacts),
                    "--values",
                    vals,
                    *dtype_args,
                    "--model_name",
                    model_name,
                    "--http_port",
                    str(port + 1),
                ],
                logs,
                "aggregator",
                bind,
            )
            parts = []
            for i, v in enumerate(values):
                chain.ports[v] = port + 2 + i
                chain.processes[v] = _spawn(
                    "agent",
                    ["--artifacts", str(artifacts), "--values", v, *dtype_args, "--http_port", str(port + 2 + i)],
                    logs,
                    v,
                    bind,
                )
                parts.append(f"{v}=http://{host}:{port + 2 + i}")
            routes, predictor = ",".join(parts), f"{host}:{port + 1}"
            waits = [("aggregator", model_name)] + [(v, v) for v in values]
        chain.ports["transformer"] = port
        chain.processes["transformer"] = _spawn(
            "transformer",
            [
                "--model_name",
                model_name,
                "--values",
                vals,
                "--agents",
                routes,
                "--predictor_host",
                predictor,
                "--predictor_protocol",
                "v1",
                "--agent_timeout_s",
                str(agent_timeout_s),
                "--http_port",
                str(port),
            ],
            logs,
            "transformer",
            bind,
        )
        for proc_name, model in [*waits, ("transformer", model_name)]:
            wait_ready(
                f"http://{host}:{chain.ports[proc_name]}",
                model,
                chain.processes[proc_name],
                log=logs / f"{proc_name}.log",
            )
    except BaseException:
        chain.stop()
        raise
    return chain


def ask(chain: Chain, question: str, profile: dict[str, float], max_new_tokens: int = 64) -> dict:
    """One V1 request through the chain; the prediction (answer, per-agent answers and scores)."""
    body = {"instances": [{"question": question, "profile": profile}], "parameters": {"max_new_tokens": max_new_tokens}}
    r = httpx.post(f"{chain.url}/v1/models/cmva:predict", json=body, timeout=900)
    r.raise_for_status()
    return r.json()["predictions"][0]


def format_answer(question: str, profile: dict[str, float], pred: dict) -> str:
    lines = [f"Q: {question}", f"profile: {profile}", "", f"CMVA-GS answer: {pred['answer']}", ""]
    for v, a in pred["agents"].items():
        lines.append(f"  [{v} agent, reward {a['scores'].get(v, float('nan')):.2f}] {a['answer']}")
    if pred["skipped"]:
        lines.append(f"  (skipped, weight 0: {', '.join(pred['skipped'])})")
    if pred["degraded"]:
        lines.append(f"  DEGRADED: no answer from {', '.join(pred['missing'])}")
    return "\n".join(lines)
