"""The chain with vLLM as its predictor (a GPU): bench/serving's (a), (c), first token and (d), and greedy answers
beside cmva's engine's.

One `vllm serve` process holds the base model with the agents' adapters and the aggregator's (the packed topology on
vLLM), and cmva's transformer asks it in the OpenAI protocol (`--predictor_api openai --openai_server vllm`), as the
`gpu-vllm` overlay's transformer asks its two InferenceServices. (a)'s denominator is one base generation on the same
server (`model` = the base; every generation exactly `--tokens` new tokens: min_tokens = max_tokens). (b) is not
measured: vLLM takes a fixed share of the GPU for its KV cache (`--gpu-memory-utilization`), whatever it serves.
Greedy answers: the base's and each agent's to the same questions, from vLLM and from cmva's engine in bfloat16 on the
same GPU, compared word for word (cmva's engine follows the base's decoding rule, an n-gram ban vLLM does not have).

    python -m bench.vllm_serving --artifacts ART [--tokens 32] [--vllm-path DIR] [--out DIR]

`--vllm-path`: where vLLM and the packages it needs beyond cmva's are installed (put before PYTHONPATH for the vLLM
process only: its pins, fastapi's for one, differ from cmva's).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.artifacts import WORK
from bench.common import gpu_used_bytes, sync_device, verdict, write_result
from bench.serving import PROFILE, QUESTIONS, _num, measure_chain

log = logging.getLogger("bench.vllm_serving")
BASE = "base"  # the base model's name on the vLLM server
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank takes


def lora_rank(adapters: dict[str, Path]) -> int:
    """The smallest rank vLLM accepts as --max-lora-rank that holds every adapter's."""
    r = max(json.loads((p / "adapter_config.json").read_text())["r"] for p in adapters.values())
    return next(x for x in LORA_RANKS if x >= r)


def vllm_argv(
    art: Path, adapters: dict[str, Path], port: int, gpu_share: float, kv_gib: float | None = None
) -> list[str]:
    """`vllm serve` of the base with every adapter, bfloat16, sampling defaults vLLM's own (not generation_config's);
    its KV cache a share of the GPU, or `kv_gib` GiB (then the stack's GPU memory is comparable with a base model's)."""
    memory = (
        ("--gpu-memory-utilization", str(gpu_share))
        if kv_gib is None
        else ("--kv-cache-memory", str(int(kv_gib * 2**30)))
    )
    return [
        *(sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(art / "base")),
        *("--served-model-name", BASE, "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16"),
        *memory,
        *("--max-model-len", "2048", "--max-num-seqs", "64"),
        *("--generation-config", "vllm", "--enable-lora", "--max-loras", str(len(adapters))),
        *("--max-lora-rank", str(lora_rank(adapters)), "--lora-modules"),
        *(f"{name}={path}" for name, path in adapters.items()),
    ]


def start_vllm(argv: list[str], vllm_path: str | None, logs: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    if vllm_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [vllm_path, env.get("PYTHONPATH"), os.getcwd()]))
    out = open(logs / "vllm.log", "w")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_health(url: str, proc: subprocess.Popen, log_file: Path, timeout: float = 600.0) -> float:
    """Seconds until vLLM's `/health` answers 200 (its HTTP server starts once the engine runs)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm exited with {proc.returncode}:\n{log_file.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"vllm at {url} not healthy after {timeout:.0f} s")


def start_transformer(art: Path, predictor_port: int, port: int, logs: Path) -> subprocess.Popen:
    """cmva's transformer on `port`, asking the server on `predictor_port` (agents and aggregator) in the OpenAI
    protocol on vLLM's paths; returned once ready (its predictors too)."""
    from cmva.serving.launcher import _spawn, wait_ready

    predictor = f"127.0.0.1:{predictor_port}"
    argv = [
        *("--model_name", "cmva", "--values", ",".join(PROFILE), "--agents", f"packed=http://{predictor}"),
        *("--predictor_host", predictor, "--predictor_api", "openai", "--openai_server", "vllm"),
        *("--artifacts", str(art), "--aggregator_adapter", "aggregator", "--http_port", str(port)),
    ]
    proc = _spawn("transformer", argv, logs, "transformer", "127.0.0.1")
    try:
        wait_ready(f"http://127.0.0.1:{port}", "cmva", proc, log=logs / "transformer.log")
    except BaseException:
        proc.kill()
        raise
    return proc


def chat(client: httpx.Client, url: str, model: str, question: str, tokens: int, exact: bool = True) -> str:
    """One greedy chat completion of `model` to the agents' prompt; `exact`: exactly `tokens` new tokens."""
    from cmva.prompts import agent_messages

    body = {"model": model, "messages": agent_messages(question), "max_tokens": tokens, "temperature": 0}
    r = client.post(f"{url}/v1/chat/completions", json=body | ({"min_tokens": tokens} if exact else {}))
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def base_generation(url: str, tokens: int, reps: int) -> dict:
    """bench/serving_probe's figures for the base model on the vLLM server, over HTTP (a chain's calls are too)."""
    with httpx.Client(timeout=300) as c:

        def timed(n: int) -> float:
            t = time.perf_counter()
            chat(c, url, BASE, QUESTIONS[0], n)
            return time.perf_counter() - t

        timed(tokens)  # warm-up
        full = [timed(tokens) for _ in range(reps)]
        one = [timed(1) for _ in range(reps)]
    return {
        "latency_s": statistics.median(full),
        "latencies_s": full,
        "prefill_s": statistics.median(one),
        "decode_tokens_per_s": (tokens - 1) / (statistics.median(full) - statistics.median(one)),
    }


def weight_bytes_bf16(base: Path) -> int:
    """Bytes of the base model's weights in bfloat16 (2 per parameter of its safetensors files)."""
    from safetensors import safe_open

    n = 0
    for f in base.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                shape = st.get_slice(k).get_shape()
                n += 2 * math.prod(shape)
    return n


def greedy_pairs(url: str, art: Path, adapters: dict[str, Path], tokens: int) -> dict:
    """Per model (the base and each agent): how many of the questions vLLM and cmva's engine answer alike, the
    answers stripped as the engine strips its own (vLLM's begins with its first token's space), and the pairs."""
    from cmva.engine import Engine
    from cmva.prompts import agent_messages

    questions = QUESTIONS[:3]
    agents = {v: p for v, p in adapters.items() if v != "aggregator"}
    with httpx.Client(timeout=300) as c:
        served = {m: [chat(c, url, m, q, tokens, exact=False) for q in questions] for m in [BASE, *agents]}
    eng = Engine(art / "base", adapters=agents, dtype="bfloat16", exact_dtype=True)
    out = {}
    for m in served:
        name = "__base__" if m == BASE else m
        offline = eng.generate([agent_messages(q) for q in questions], [name] * len(questions), max_new_tokens=tokens)
        pairs = list(zip(served[m], offline, strict=True))
        out[m] = {"equal": sum(a.strip() == b for a, b in pairs), "of": len(pairs)}
        out[m]["pairs"] = [{"vllm": a, "engine": b} for a, b in pairs]
    sync_device(eng.device)
    return out


def _greedy_or_error(url: str, art: Path, adapters: dict[str, Path], tokens: int) -> dict:
    """greedy_pairs, or {"error": …}: the comparison's failure does not lose the measurements before it."""
    try:
        return greedy_pairs(url, art, adapters, tokens)
    except Exception as e:  # reported in the result, beside the figures
        log.exception("greedy comparison failed")
        return {"error": repr(e)[:2000]}


def run(a: argparse.Namespace) -> dict:
    import psutil

    from bench.serving_probe import read_bandwidth
    from cmva.serving.launcher import free_port_block

    art = Path(a.artifacts)
    values = list(PROFILE)
    adapters = {v: art / "agents" / v for v in values} | {"aggregator": art / "aggregator"}
    logs = WORK / "serve-logs-vllm"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port_block(4)
    vurl = f"http://127.0.0.1:{port + 1}"
    gpu0 = gpu_used_bytes()
    vllm = start_vllm(vllm_argv(art, adapters, port + 1, a.gpu_share, a.kv_gib), a.vllm_path, logs)
    procs = [vllm]
    try:
        start_s = wait_health(vurl, vllm, logs / "vllm.log")
        log.info("vllm healthy after %.0f s", start_s)
        base = base_generation(vurl, a.tokens, a.reps)
        log.info("base: %s", base)
        procs.append(start_transformer(art, port + 1, port, logs))
        url = f"http://127.0.0.1:{port}"
        pids = [p.pid for p in procs] + [c.pid for c in psutil.Process(vllm.pid).children(recursive=True)]
        chain = measure_chain(url, pids, a.tokens, a.reps, a.per_client, gpu0, "vllm")  # with vLLM's engine core
        greedy = _greedy_or_error(vurl, art, adapters, a.tokens) if a.compare else None
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    bandwidth = read_bandwidth("cuda")
    model_bytes = weight_bytes_bf16(art / "base")
    return {
        "artifacts": str(art),
        "tokens": a.tokens,
        "vllm": _version(a.vllm_path),
        "start_s": round(start_s, 1),
        "kv": f"--gpu-memory-utilization {a.gpu_share}" if a.kv_gib is None else f"--kv-cache-memory {a.kv_gib} GiB",
        "base": base | {"model_bytes": model_bytes, "read_bandwidth_bytes_per_s": bandwidth},
        "chain": chain,
        "ratios": {
            "latency_ratio": chain["latency_s"] / base["latency_s"],
            "ttft_ratio": None if chain["ttft_s"] is None else chain["ttft_s"] / base["latency_s"],
            "throughput_ratio": chain["throughput_8_rps"] / chain["throughput_1_rps"],
            "decode_bandwidth_fraction": base["decode_tokens_per_s"] * model_bytes / bandwidth,
        },
        "greedy": greedy,
    }


def _version(vllm_path: str | None) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [vllm_path, os.environ.get("PYTHONPATH")])))
    code = "import importlib.metadata as m; print(m.version('vllm'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    return out.stdout.strip() or "unknown"


def render(r: dict) -> str:
    b, c, k = r["base"], r["chain"], r["ratios"]
    lines = [
        f"vLLM {r['vllm']}, artifacts `{r['artifacts']}`: one `vllm serve` (base + {len(PROFILE)} agents + the "
        f"aggregator as LoRA adapters, bfloat16, healthy after {r['start_s']:.0f} s) behind cmva's transformer "
        f"(`--predictor_api openai --openai_server vllm`). Every generation exactly {r['tokens']} new tokens.",
        "",
        f"Base generation on that server: {b['latency_s']:.3f} s (prefill + first token {b['prefill_s']:.3f} s, "
        f"decode {b['decode_tokens_per_s']:.0f} tok/s at batch 1); weights {b['model_bytes'] / 2**20:.0f} MiB, "
        f"read bandwidth {b['read_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s.",
        "",
        "| chain latency | (a) ÷ base | first token | ÷ base | 1 client | 8 clients | (c) 8 ÷ 1 | (d) decode ÷ bound |",
        "|---|---|---|---|---|---|---|---|",
        f"| {c['latency_s']:.3f} s | {k['latency_ratio']:.2f} | {_num(c['ttft_s'], ' s')} | {_num(k['ttft_ratio'])} "
        f"| {c['throughput_1_rps']:.2f} req/s | {c['throughput_8_rps']:.2f} req/s | {k['throughput_ratio']:.2f} "
        f"| {k['decode_bandwidth_fraction']:.3f} |",
        "",
        f"Stack's peak memory: GPU {_num(None if c['gpu_bytes'] is None else c['gpu_bytes'] / 2**30, ' GiB')} (vLLM's "
        f"KV cache included: {r.get('kv', 'a share of the GPU')}), host RSS {c['peak_rss_bytes'] / 2**20:.0f} MiB.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| (a) chain ÷ base ≤ 2.0 | {k['latency_ratio']:.2f} | {verdict(k['latency_ratio'], 2.0, False)} |",
        f"| (c) 8 ÷ 1 clients ≥ 3 | {k['throughput_ratio']:.2f} | {verdict(k['throughput_ratio'], 3.0, True)} |",
        f"| (d) ≥ 0.6 | {k['decode_bandwidth_fraction']:.3f} | {verdict(k['decode_bandwidth_fraction'], 0.6, True)} |",
    ]
    if r["greedy"] and "error" in r["greedy"]:
        lines += ["", f"Greedy comparison failed: {r['greedy']['error']}"]
    elif r["greedy"]:
        lines += ["", "Greedy answers, vLLM (stripped) vs cmva's engine (bfloat16, same GPU), word for word:", ""]
        lines += [f"- {m}: {g['equal']} of {g['of']} equal" for m, g in r["greedy"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True, help="a serving channel's layout: base/, agents/<value>/, aggregator/")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--per-client", type=int, default=3)
    p.add_argument("--gpu-share", type=float, default=0.3, help="vLLM's --gpu-memory-utilization")
    p.add_argument("--kv-gib", type=float, help="vLLM's KV cache in GiB (--kv-cache-memory) instead of a share")
    p.add_argument("--vllm-path", help="vLLM's own packages, before PYTHONPATH for the vLLM process")
    p.add_argument("--no-compare", dest="compare", action="store_false", help="skip the greedy comparison")
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(a)
    print(write_result("vllm_serving", result, render(result), a.out))


if __name__ == "__main__":
    main()
