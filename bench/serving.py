"""Serving benchmark: chain latency, memory, concurrency and decode speed, as ratios measured side by side.

    .venv/bin/python -m bench.serving [--artifacts runs/cpu] [--tokens 32] [--topologies packed,separate]
                                        [--dtypes float32,bfloat16,float16-weights]

(a) latency of one chain request (all agents + aggregator, same max/min_new_tokens) ÷ one plain generation
    of the base model — target ≤ 2.0 (packed);
    time to first token of the final answer (streamed OpenAI route: the aggregator's first text) beside it;
(b) peak RSS of the serving stack (sum over its processes) ÷ peak RSS of one process holding the base
    model — target ≤ 1.3 (packed);
(c) throughput with 8 concurrent clients ÷ with 1 client — target ≥ 3;
(d) batch-1 decode speed × model bytes ÷ memory read bandwidth measured here — target ≥ 0.6.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.artifacts import WORK, serving_artifacts
from bench.common import gpu_used_bytes, verdict, write_result
from bench.serving_stream import time_to_first_token

log = logging.getLogger("bench.serving")
PROFILE = {"care": 1.0, "fairness": 0.8, "loyalty": 0.6, "authority": 0.4, "sanctity": 0.2}
QUESTIONS = [
    "My friend asked me to lie to her parents about where she was. Should I?",
    "Is it okay to skip my cousin's wedding to go to a concert?",
    "My coworker takes credit for my work. Should I tell our boss?",
    "Should I report a neighbour who doesn't recycle?",
    "Is it wrong to eat meat at a vegetarian friend's house?",
    "My brother wants to borrow money again. Should I say no?",
    "Can I read my teenager's diary if I'm worried about her?",
    "Should I tell my friend her boyfriend is cheating?",
]


class RssSampler:
    """Peak of the summed RSS of a set of processes, sampled every `every_s` in a thread; with a GPU, also the
    peak of its memory in use (`gpu_peak`, every process on it: compare with a baseline taken before)."""

    def __init__(self, pids: list[int], every_s: float = 0.2):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak, self.every_s = 0, every_s
        self.gpu_peak = gpu_used_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self.procs:
                try:
                    total += p.memory_info().rss
                except Exception:  # a process that died (reliability runs) no longer counts
                    pass
            self.peak = max(self.peak, total)
            if self.gpu_peak is not None:
                self.gpu_peak = max(self.gpu_peak, gpu_used_bytes() or 0)
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def chain_request(client: httpx.Client, url: str, q: str, tokens: int) -> dict:
    body = {
        "instances": [{"question": q, "profile": PROFILE}],
        "parameters": {"max_new_tokens": tokens, "min_new_tokens": tokens},
    }
    r = client.post(f"{url}/v1/models/cmva:predict", json=body)
    r.raise_for_status()
    pred = r.json()["predictions"][0]
    if pred["degraded"]:
        raise RuntimeError(f"degraded answer during the benchmark: missing {pred['missing']}")
    return pred


def first_token_s(client: httpx.Client, url: str, q: str, tokens: int) -> float | None:
    """Seconds to the first chunk of the aggregator's text of one streamed chain request (None: it had none);
    `min_tokens` (vLLM's extra field, the transformer's too) = max, so it does the work of (a)'s requests."""
    body = {"messages": [{"role": "user", "content": q}], "profile": PROFILE, "max_tokens": tokens}
    s, meta = time_to_first_token(client, url, body | {"min_tokens": tokens})
    if meta.get("degraded"):
        raise RuntimeError(f"degraded answer during the benchmark: missing {meta['missing']}")
    return s


def throughput(url: str, clients: int, per_client: int, tokens: int) -> float:
    """Requests per second with `clients` concurrent clients, each sending `per_client` requests."""

    def worker(k: int) -> None:
        with httpx.Client(timeout=httpx.Timeout(900, connect=5)) as c:
            for i in range(per_client):
                chain_request(c, url, QUESTIONS[(k + i) % len(QUESTIONS)], tokens)

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return clients * per_client / (time.perf_counter() - t)


def bench_topology(art: Path, topology: str, tokens: int, reps: int, per_client: int, dtype: str = "float32") -> dict:
    from cmva.serving.launcher import free_port_block, start_chain

    port = free_port_block(8)
    gpu0 = gpu_used_bytes()
    t0 = time.perf_counter()
    chain = start_chain(str(art), topology, port, log_dir=WORK / f"serve-logs-{topology}", dtype=dtype)
    start_s = time.perf_counter() - t0
    try:
        pids = [p.pid for p in chain.processes.values()]
        return {"start_s": round(start_s, 1)} | measure_chain(chain.url, pids, tokens, reps, per_client, gpu0, topology)
    finally:
        chain.stop()


def measure_chain(
    url: str, pids: list[int], tokens: int, reps: int, per_client: int, gpu0: int | None, name: str
) -> dict:
    """Latency (median of `reps` after a warm-up), first token, peak memory of the processes `pids` and
    throughput with 1 and 8 clients of a running chain at `url` (its transformer)."""
    with RssSampler(pids) as rss, httpx.Client(timeout=httpx.Timeout(900, connect=5)) as c:
        chain_request(c, url, QUESTIONS[0], tokens)  # warm-up
        lat = []
        for i in range(reps):
            t = time.perf_counter()
            chain_request(c, url, QUESTIONS[i % len(QUESTIONS)], tokens)
            lat.append(time.perf_counter() - t)
        first_token_s(c, url, QUESTIONS[0], tokens)  # warm-up of the streaming route
        ttft = [first_token_s(c, url, QUESTIONS[i % len(QUESTIONS)], tokens) for i in range(reps)]
        got = [x for x in ttft if x is not None]
        log.info("%s: chain latency %.2f s; throughput …", name, statistics.median(lat))
        tp1 = throughput(url, 1, per_client, tokens)
        tp8 = throughput(url, 8, per_client, tokens)
    return {
        "processes": len(pids),
        "latency_s": statistics.median(lat),
        "latencies_s": lat,
        "ttft_s": statistics.median(got) if got else None,  # None: no answer had visible text
        "ttfts_s": ttft,
        "peak_rss_bytes": rss.peak,
        "gpu_bytes": None if gpu0 is None else rss.gpu_peak - gpu0,  # the stack's peak on the GPU
        "throughput_1_rps": tp1,
        "throughput_8_rps": tp8,
    }


def run_probe(art: Path, tokens: int, reps: int, dtype: str = "float32") -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.serving_probe", "--base", str(art / "base"), "--tokens", str(tokens)]
        + ["--reps", str(reps), "--dtype", dtype],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"base-model probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="a complete run directory (default: runs/cpu, else built shapes)")
    p.add_argument("--tokens", type=int, default=32, help="max_new_tokens = min_new_tokens of every generation")
    p.add_argument("--reps", type=int, default=5, help="sequential requests timed for the latency")
    p.add_argument("--per-client", type=int, default=3, help="requests per client in the throughput runs")
    p.add_argument("--topologies", default="packed,separate")
    p.add_argument(
        "--dtypes",
        default="float32",
        help="comma-separated: float32, bfloat16, float16-weights (each with its own base probe)",
    )
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    art = serving_artifacts(a.artifacts, list(PROFILE))
    log.info("artifacts: %s", art)
    modes = {d: bench_mode(art, a, d) for d in a.dtypes.split(",")}
    result = {"artifacts": str(art), "tokens": a.tokens, "modes": modes}
    print(write_result("serving", result, render(result), a.out))


def bench_mode(art: Path, a: argparse.Namespace, dtype: str) -> dict:
    """The base probe and every topology, the predictors' base model in `dtype` (a predictor's `--dtype`)."""
    base = run_probe(art, a.tokens, a.reps, dtype)
    log.info("base (%s): %.2f s per generation, %.1f tok/s", dtype, base["latency_s"], base["decode_tokens_per_s"])
    topo = {}
    for t in a.topologies.split(","):
        topo[t] = bench_topology(art, t, a.tokens, a.reps, a.per_client, dtype)
        log.info("%s: %s", t, {k: v for k, v in topo[t].items() if k not in ("latencies_s", "ttfts_s")})
    return {
        "base": base,
        "topologies": topo,
        "ratios": {t: ratios(r, base) for t, r in topo.items()},
        "decode_bandwidth_fraction": base["decode_tokens_per_s"]
        * base["model_bytes"]
        / base["read_bandwidth_bytes_per_s"],
    }


def ratios(r: dict, base: dict) -> dict:
    """(a), first token, (b), (c) of one topology against the base probe of the same precision."""
    return {
        "latency_ratio": r["latency_s"] / base["latency_s"],
        "ttft_ratio": None if r["ttft_s"] is None else r["ttft_s"] / base["latency_s"],
        "rss_ratio": r["peak_rss_bytes"] / base["peak_rss_bytes"],
        "gpu_ratio": r["gpu_bytes"] / base["gpu_bytes"] if r.get("gpu_bytes") and base.get("gpu_bytes") else None,
        "throughput_ratio": r["throughput_8_rps"] / r["throughput_1_rps"],
    }


def render(r: dict) -> str:
    lines = [
        f"Artifacts `{r['artifacts']}`; every generation exactly {r['tokens']} new tokens "
        f"(min_new_tokens = max_new_tokens); profile with all 5 values > 0. Each precision is compared with a base "
        'model of the same precision; "÷ float32 base": the same latency ÷ the float32 base generation.',
        "",
    ]
    for q, m in r["modes"].items():
        b = m["base"]
        lines.append(
            f"Base model alone ({q}, device {b['device']}): {b['latency_s']:.2f} s per generation, decode "
            f"{b['decode_tokens_per_s']:.1f} tok/s at batch 1, peak RSS {b['peak_rss_bytes'] / 2**20:.0f} MiB, "
            f"weights {b['model_bytes'] / 2**20:.0f} MiB, read bandwidth {b['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s."
        )
    fp32 = r["modes"].get("float32", {}).get("base")
    lines += [
        "",
        "| dtype | topology | processes | chain latency | (a) ÷ base | ÷ float32 base | first token | ÷ base "
        "| peak RSS | (b) ÷ base | 1 client | 8 clients | (c) 8 ÷ 1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for q, m in r["modes"].items():
        for t, x in m["topologies"].items():
            k = m["ratios"][t]
            vs32 = _num(x["latency_s"] / fp32["latency_s"]) if fp32 else "n/a"
            lines.append(
                f"| {q} | {t} | {x['processes']} | {x['latency_s']:.2f} s | {k['latency_ratio']:.2f} | {vs32} | "
                f"{_num(x['ttft_s'], ' s')} | {_num(k['ttft_ratio'])} | "
                f"{x['peak_rss_bytes'] / 2**20:.0f} MiB | {k['rss_ratio']:.2f} | {x['throughput_1_rps']:.3f} req/s | "
                f"{x['throughput_8_rps']:.3f} req/s | {k['throughput_ratio']:.2f} |"
            )
    lines += _gpu_lines(r)
    lines += ["", "| dtype | target | measured | verdict |", "|---|---|---|---|"]
    for q, m in r["modes"].items():
        lines += _verdicts(q, m)
    lines += ["", "First token: from sending a streamed request to the aggregator's first text (median); its ÷ base: "
              "that time ÷ one whole base generation."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _gpu_lines(r: dict) -> list[str]:
    """GPU memory of each stack beside its base model's (nvidia-smi: in use on the GPU, peak − before start)."""
    rows = [
        f"| {q} | {t} | {x['gpu_bytes'] / 2**20:.0f} MiB | {m['base']['gpu_bytes'] / 2**20:.0f} MiB "
        f"| {m['ratios'][t]['gpu_ratio']:.2f} |"
        for q, m in r["modes"].items()
        for t, x in m["topologies"].items()
        if m["ratios"][t].get("gpu_ratio")
    ]
    head = ["", "| dtype | topology | GPU memory of the stack | of the base model alone | (b) on the GPU ÷ base |"]
    return head + ["|---|---|---|---|---|"] + rows if rows else []


def _verdicts(q: str, m: dict) -> list[str]:
    lines = []
    if "packed" in m["ratios"]:
        k = m["ratios"]["packed"]
        lines.append(
            f"| {q} | (a) packed latency ratio | {k['latency_ratio']:.2f} | {verdict(k['latency_ratio'], 2.0, False)} |"
        )
        lines.append(f"| {q} | (b) packed RSS ratio | {k['rss_ratio']:.2f} | {verdict(k['rss_ratio'], 1.3, False)} |")
        if k.get("gpu_ratio"):
            g = k["gpu_ratio"]
            lines.append(f"| {q} | (b) packed GPU memory ratio | {g:.2f} | {verdict(g, 1.3, False)} |")
    for t, k in m["ratios"].items():
        c = k["throughput_ratio"]
        lines.append(f"| {q} | (c) {t} throughput 8 ÷ 1 | {c:.2f} | {verdict(c, 3.0, True)} |")
    f = m["decode_bandwidth_fraction"]
    lines.append(f"| {q} | (d) batch-1 decode ÷ bandwidth bound | {f:.2g} | {verdict(f, 0.6, True)} |")
    return lines


def _num(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:.2f}{unit}"


if __name__ == "__main__":
    main()
