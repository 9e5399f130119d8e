"""Where one chain request's time goes: its work done in one process, step by step, beside one base generation.

The chain is two generations in sequence (the agents as one mixed-adapter batch, then the aggregator over their
answers) plus scoring and ranking; this times each step with the serving code's own objects (Engine, RewardModel,
AnswerRanker), no HTTP, so that (a) of bench/serving splits into the work's floor and the serving overhead:

    .venv/bin/python -m bench.serving_profile --artifacts DIR [--tokens 32] [--reps 3] [--chain] [--part memory]

`--chain` also times the packed chain over HTTP (bench/serving's (a)) in the same run: the gap is HTTP, JSON,
validation and the hops between processes. With the timings (`--part all`, the default) comes where (b)'s memory
goes: the RSS of a fresh process after each thing the packed predictor loads. Writes bench/results/serving_profile.md
(+ .json).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from bench.serving import PROFILE, QUESTIONS

log = logging.getLogger("bench.serving_profile")


def best(fn, reps: int) -> float:
    """Best wall time of `reps` calls after one warm-up (other work on the machine only slows a call down)."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def packed_engine(art: Path, dtype: str):
    """The packed predictor's engine: the base in `dtype` (as its `--dtype`), every agent's adapter and the aggregator's."""
    from cmva.engine import Engine

    adapters = {**{v: art / "agents" / v for v in PROFILE}, "aggregator": art / "aggregator"}
    return Engine(art / "base", adapters, dtype=dtype, exact_dtype=True)


def steps(art: Path, tokens: int, reps: int, dtype: str = "float32") -> dict[str, float]:
    """Seconds of each step of one request with all five values, and of one plain base generation, the base model in
    `dtype` (as a predictor's `--dtype`)."""
    from cmva.engine import BASE
    from cmva.prompts import agent_messages, aggregator_messages
    from cmva.ranking import AnswerRanker
    from cmva.rewards import RewardModel

    values = list(PROFILE)
    engine = packed_engine(art, dtype)
    rewards = RewardModel.load(art / "rewards")
    ranker = AnswerRanker.load(art / "aggregator", art / "rewards")
    q = QUESTIONS[0]
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=8)
    answers = dict(zip(values, engine.generate([agent_messages(q)] * 5, values, **kw), strict=True))
    order = ranker.order([PROFILE], [answers])[0] if ranker else None
    agg = [aggregator_messages(q, PROFILE, answers, order)]
    out = {
        "base generation": best(lambda: engine.generate([agent_messages(q)], [BASE], **kw), reps),
        "agents (5, one batch)": best(lambda: engine.generate([agent_messages(q)] * 5, values, **kw), reps),
        "reward scores of the 5 answers": best(lambda: rewards.score(list(answers.values())), reps),
        "ranking (second set)": best(lambda: ranker.order([PROFILE], [answers]), reps) if ranker else 0.0,
        "aggregator prefill (1 token)": best(
            lambda: engine.generate(agg, ["aggregator"], max_new_tokens=1, min_new_tokens=1), reps
        ),
        "aggregator": best(lambda: engine.generate(agg, ["aggregator"], **kw), reps),
    }
    out["prompt tokens: agent / aggregator"] = [
        len(engine.tokenizer(engine.chat_prompt(m))["input_ids"]) for m in (agent_messages(q), agg[0])
    ]
    return out


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory_steps(art: Path, tokens: int, dtype: str = "float32") -> dict[str, float]:
    """RSS (MiB) of one process after each thing the packed predictor holds is loaded, then after one request's
    generations; run in a fresh process (`--part memory`), so the first figure is the interpreter's."""
    out = {"python + cmva": rss_mib()}
    import kserve  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    out["+ torch, transformers, peft, kserve imported"] = rss_mib()
    from cmva.engine import Engine

    values = list(PROFILE)
    engine = Engine(art / "base", dtype=dtype, exact_dtype=True)
    out["+ base model"] = rss_mib()
    del engine
    engine = packed_engine(art, dtype)
    out["base model + 6 adapters (the base alone freed first)"] = rss_mib()
    from cmva.rewards import RewardModel

    rewards = RewardModel.load(art / "rewards")
    out["+ reward model (scores)"] = rss_mib()
    from cmva.ranking import AnswerRanker

    ranker = AnswerRanker.load(art / "aggregator", art / "rewards")
    out["+ second reward set (ranking)"] = rss_mib()
    from cmva.prompts import agent_messages, aggregator_messages

    q, kw = QUESTIONS[0], dict(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=8)
    answers = dict(zip(values, engine.generate([agent_messages(q)] * 5, values, **kw), strict=True))
    rewards.score(list(answers.values()))
    order = ranker.order([PROFILE], [answers])[0] if ranker else None
    engine.generate([aggregator_messages(q, PROFILE, answers, order)], ["aggregator"], **kw)
    out["+ after one request (agents, scores, ranking, aggregator)"] = rss_mib()
    return out


def chain_latency(art: Path, tokens: int, reps: int, dtype: str = "float32") -> float:
    """Median latency of the packed chain over HTTP (bench/serving's (a) numerator)."""
    import httpx

    from bench.serving import chain_request
    from cmva.serving.launcher import free_port_block, start_chain

    with start_chain(str(art), "packed", free_port_block(8), dtype=dtype) as chain, httpx.Client(timeout=900) as c:
        chain_request(c, chain.url, QUESTIONS[0], tokens)  # warm-up
        lat = []
        for _ in range(reps):
            t = time.perf_counter()
            chain_request(c, chain.url, QUESTIONS[0], tokens)
            lat.append(time.perf_counter() - t)
    return statistics.median(lat)


def render(r: dict) -> str:
    s, base = r["steps_s"], r["steps_s"]["base generation"]
    work = ["agents (5, one batch)", "reward scores of the 5 answers", "ranking (second set)", "aggregator"]
    floor = sum(s[k] for k in work)
    lines = [
        f"Artifacts `{r['artifacts']}`; base model in {r.get('dtype', 'float32')}; every generation {r['tokens']} new tokens; profile with all 5 values > 0; "
        f"best of {r['reps']} after a warm-up; prompt tokens agent / aggregator: "
        f"{s['prompt tokens: agent / aggregator'][0]} / {s['prompt tokens: agent / aggregator'][1]}.",
        "",
        "| step | seconds | ÷ base generation |",
        "|---|---|---|",
    ]
    for k, v in s.items():
        if isinstance(v, float):
            lines.append(f"| {k} | {v:.3f} | {v / base:.2f} |")
    lines.append(
        f"| **the chain's work** (agents + scores + ranking + aggregator) | {floor:.3f} | **{floor / base:.2f}** |"
    )
    if r.get("chain_s"):
        c = r["chain_s"]
        lines.append(f"| packed chain over HTTP (median) | {c:.3f} | {c / base:.2f} |")
        lines.append(f"| serving overhead (chain − work) | {c - floor:.3f} | {(c - floor) / base:.2f} |")
    if r.get("memory_mib"):
        lines += ["", "| RSS of one process (MiB) | MiB |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in r["memory_mib"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from bench.artifacts import serving_artifacts
    from bench.common import write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="a complete run directory (default: as bench/serving)")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--chain", action="store_true", help="also time the packed chain over HTTP")
    p.add_argument("--part", choices=["all", "time", "memory"], default="all", help="memory: this process only, JSON")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16-weights (a predictor's --dtype)")
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    art = serving_artifacts(a.artifacts, list(PROFILE))
    if a.part == "memory":
        print(json.dumps(memory_steps(art, a.tokens, a.dtype)))
        return
    res = {"artifacts": str(art), "tokens": a.tokens, "reps": a.reps, "dtype": a.dtype}
    if a.part == "all":
        res["memory_mib"] = memory_in_a_fresh_process(art, a.tokens, a.dtype)
    res["steps_s"] = steps(art, a.tokens, a.reps, a.dtype)
    if a.chain:
        res["chain_s"] = chain_latency(art, a.tokens, a.reps, a.dtype)
    print(Path(write_result("serving_profile", json.loads(json.dumps(res)), render(res), a.out)).read_text())


def memory_in_a_fresh_process(art: Path, tokens: int, dtype: str = "float32") -> dict[str, float]:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bench.serving_profile", "--part", "memory", "--artifacts", str(art)]
    cmd += ["--dtype", dtype]
    done = subprocess.run([*cmd, "--tokens", str(tokens)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
