"""Where a served chain request spends its time, sampled with py-spy in the running servers (packed topology).

py-spy samples every thread of the predictor and of the transformer (idle ones included) while sequential chain
requests run; each sample is classed by its stack: generation (transformers' decode or prefill), reward scoring
and ranking, other Python work, or waiting. With the requests' wall time this says how much of a request the
predictor spends generating, and how much is left for HTTP, validation and the hops between processes.

    .venv/bin/python -m bench.serving_pyspy --artifacts DIR [--requests 4] [--tokens 32]

Writes bench/results/serving_pyspy.md (+ .json). py-spy's sampling slows the servers a little (the requests'
latencies are reported as measured under it).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.serving import QUESTIONS, chain_request

RATE = 20  # samples per second
WAITING = ("select", "wait", "sleep", "_worker (concurrent", "acquire", "poll", "recv")


def classify(stack: str) -> str:
    """The class of one sampled stack (py-spy raw format: frames joined by ';', the thread first)."""
    if "GenerationMixin._sample" in stack or "_prefill" in stack:
        return "generation"
    if "RewardModel.score" in stack or "AnswerRanker" in stack:
        return "scoring + ranking"
    leaf = stack.rsplit(";", 1)[-1]
    return "waiting" if any(k in leaf for k in WAITING) else "other Python work"


def busiest_thread(raw: Path) -> tuple[str, collections.Counter]:
    """The thread with the fewest waiting samples, and its samples per class."""
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        per[stack.split(";", 1)[0]][classify(stack)] += int(n)
    return min(per.items(), key=lambda kv: kv[1]["waiting"] / max(1, sum(kv[1].values())))


def record(pid: int, out: Path, seconds: int) -> subprocess.Popen:
    spy = Path(sys.executable).with_name("py-spy")  # the dev extra installs it beside the interpreter
    cmd = [str(spy), "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", str(RATE)]
    return subprocess.Popen(
        [*cmd, "--threads", "--idle", "--nonblocking", "-d", str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(art: Path, requests: int, tokens: int, work: Path) -> dict:
    import httpx

    from cmva.serving.launcher import free_port_block, start_chain

    with start_chain(str(art), "packed", free_port_block(8)) as chain, httpx.Client(timeout=900) as c:
        chain_request(c, chain.url, QUESTIONS[0], tokens)  # warm-up
        t = time.perf_counter()
        chain_request(c, chain.url, QUESTIONS[0], tokens)
        unsampled = time.perf_counter() - t
        window = int(unsampled * 1.6 * requests) + 5
        spies = {role: record(p.pid, work / f"{role}.txt", window) for role, p in chain.processes.items()}
        time.sleep(2)
        lat = []
        for i in range(requests):
            t = time.perf_counter()
            chain_request(c, chain.url, QUESTIONS[i % len(QUESTIONS)], tokens)
            lat.append(time.perf_counter() - t)
        for s in spies.values():
            s.wait()
    out = {"unsampled_latency_s": unsampled, "latencies_s": lat, "window_s": window, "processes": {}}
    for role in spies:
        thread, counts = busiest_thread(work / f"{role}.txt")
        out["processes"][role] = {"thread": thread, "seconds": {k: v / RATE for k, v in counts.items()}}
    return out


def render(r: dict) -> str:
    busy = sum(r["latencies_s"])
    lines = [
        f"Packed chain on `{r['artifacts']}`, {r['tokens']} new tokens per generation, {len(r['latencies_s'])} "
        f"sequential requests sampled by py-spy at {RATE} Hz for {r['window_s']} s (requests {busy:.1f} s of it; "
        f"latency {min(r['latencies_s']):.2f}–{max(r['latencies_s']):.2f} s sampled, "
        f"{r['unsampled_latency_s']:.2f} s unsampled).",
        "",
        "| process (its busiest thread) | generation s | scoring + ranking s | other Python s | waiting s "
        "| generation per request |",
        "|---|---|---|---|---|---|",
    ]
    for role, p in r["processes"].items():
        s = p["seconds"]
        per = s.get("generation", 0) / len(r["latencies_s"])
        lines.append(
            f"| {role} ({p['thread']}) | {s.get('generation', 0):.1f} | {s.get('scoring + ranking', 0):.1f} | "
            f"{s.get('other Python work', 0):.1f} | {s.get('waiting', 0):.1f} | {per:.2f} s of "
            f"{busy / len(r['latencies_s']):.2f} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import json

    from bench.artifacts import serving_artifacts
    from bench.common import write_result
    from bench.serving import PROFILE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="a complete run directory (default: as bench/serving)")
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32)
    a = p.parse_args(argv)
    art = serving_artifacts(a.artifacts, list(PROFILE))
    with tempfile.TemporaryDirectory(prefix="cmva-pyspy-") as tmp:
        res = {"artifacts": str(art), "tokens": a.tokens, **measure(art, a.requests, a.tokens, Path(tmp))}
    print(Path(write_result("serving_pyspy", json.loads(json.dumps(res)), render(res))).read_text())


if __name__ == "__main__":
    main()
