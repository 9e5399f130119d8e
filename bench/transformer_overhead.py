"""What cmva's transformer adds to a chain request in the OpenAI protocol, with predictors that answer at once.

A stand-in for vLLM's own server (`/v1/chat/completions` answering a fixed answer without generating, `/health`)
takes the place of the predictors, so the chain's latency is the transformer's own work: validation, the agents'
five concurrent calls, the aggregator's ranking of their answers (the reward encoder, on this machine's CPU: the
aggregator's `ranking.json`), its prompt, the aggregator's call, the response. The ranking alone is also timed in
this process, on the same answers. On a GPU this is the part of bench/vllm_serving's chain that no GPU speeds up.

    python -m bench.transformer_overhead --artifacts RUN/serving/channels/staging [--reps 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import httpx

from bench.artifacts import WORK
from bench.common import write_result
from bench.serving import PROFILE, QUESTIONS, chain_request
from bench.vllm_serving import start_transformer

log = logging.getLogger("bench.transformer_overhead")
# About 32 tokens of the base's tokenizer, as each generation of bench/serving.
ANSWER = (
    "It is usually better to tell the truth, but first ask your friend why she wants you to lie and whether she is "
    "safe; then decide together what to say."
)


def completion(model: str) -> bytes:
    """A chat completion with ANSWER, in vLLM's shape (its leading space included)."""
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": " " + ANSWER}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 32, "total_tokens": 132},
    }
    return json.dumps(body).encode()


class Instant(BaseHTTPRequestHandler):
    """vLLM's paths, answering at once."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._reply(200 if self.path == "/health" else 404, b"")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        self._reply(200, completion(body.get("model", "")))

    def _reply(self, status: int, data: bytes):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def time_chain(url: str, reps: int) -> list[float]:
    with httpx.Client(timeout=300) as c:
        chain_request(c, url, QUESTIONS[0], 32)  # warm-up: the ranking's first call loads nothing more
        out = []
        for i in range(reps):
            t = time.perf_counter()
            chain_request(c, url, QUESTIONS[i % len(QUESTIONS)], 32)
            out.append(time.perf_counter() - t)
    return out


def time_ranking(art: Path, reps: int) -> list[float]:
    """The transformer's ranking of five answers (cmva.serving.chat_aggregator.load_ranker), alone."""
    from cmva.serving.chat_aggregator import load_ranker

    ranker = load_ranker(str(art))
    if ranker is None:
        return []
    answers = [{v: ANSWER for v in PROFILE}]
    ranker.order([PROFILE], answers)  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        ranker.order([PROFILE], answers)
        out.append(time.perf_counter() - t)
    return out


def run(art: Path, reps: int) -> dict:
    from cmva.serving.launcher import free_port_block

    port = free_port_block(2)
    server = ThreadingHTTPServer(("127.0.0.1", port + 1), Instant)
    Thread(target=server.serve_forever, daemon=True).start()
    logs = WORK / "serve-logs-overhead"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        proc = start_transformer(art, port + 1, port, logs)
        try:
            chain = time_chain(f"http://127.0.0.1:{port}", reps)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        server.shutdown()
    ranking = time_ranking(art, reps)
    return {
        "artifacts": str(art),
        "reps": reps,
        "chain_s": statistics.median(chain),
        "chains_s": chain,
        "ranking_s": statistics.median(ranking) if ranking else None,
        "rankings_s": ranking,
    }


def render(r: dict) -> str:
    rank = "no ranking.json: by weight" if r["ranking_s"] is None else f"{r['ranking_s'] * 1e3:.0f} ms"
    return (
        f"Artifacts `{r['artifacts']}`; predictors that answer at once (vLLM's paths); median of {r['reps']} sequential "
        f"requests, five agents and the aggregator each.\n\n"
        "| chain through the transformer alone | of which the ranking of five answers (same process, alone) |\n"
        "|---|---|\n"
        f"| {r['chain_s'] * 1e3:.0f} ms | {rank} |\n"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True, help="a serving channel (its aggregator's ranking.json, rewards)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(Path(a.artifacts), a.reps)
    print(write_result("transformer_overhead", result, render(result), a.out))


if __name__ == "__main__":
    main()
