"""The reference process of bench/serving: one process holding the base model, nothing else.

Prints JSON: plain-generation latency, batch-1 decode speed, model bytes, peak RSS (before the
bandwidth probe, which allocates its own buffer) and the memory read bandwidth of this machine.

    python -m bench.serving_probe --base runs/cpu/base --tokens 32 --reps 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

from bench.common import gpu_used_bytes, sync_device


def read_bandwidth(device: str, gib: float = 1.0, reps: int = 7) -> float:
    """Bytes/s of reading a large float32 buffer with torch (same threads as the model): best of `reps`."""
    import torch

    x = torch.ones(int(gib * 2**30 / 4), dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(reps):
        sync_device(device)
        t = time.perf_counter()
        x.sum()
        sync_device(device)
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def weight_bytes(model) -> int:
    """Bytes of the weights one decode step reads: the parameters, and float16-packed linear layers (dtype
    `float16-weights`, cmva.cpu_linear) at 2 bytes per weight; there the input embedding, of which a step reads one row
    per token, is left out (the packed output head is read instead)."""
    from cmva.cpu_linear import Float16WeightLinear

    packed = [m for m in model.modules() if isinstance(m, Float16WeightLinear)]
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    if packed:
        emb = model.get_input_embeddings().weight
        total += sum(m.in_features * m.out_features * 2 for m in packed) - emb.numel() * emb.element_size()
    return total


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--dtype", default="float32", help="float32 | bfloat16 | float16-weights (cmva.models.generation_dtype)"
    )
    a = p.parse_args(argv)
    from cmva.engine import Engine
    from cmva.prompts import agent_messages

    gpu0 = gpu_used_bytes()
    eng = Engine(a.base, dtype=a.dtype, exact_dtype=True)
    msgs = [agent_messages("My friend asked me to lie to her parents about where she was. Should I?")]

    def timed(n: int) -> float:
        sync_device(eng.device)
        t = time.perf_counter()
        eng.generate(msgs, max_new_tokens=n, min_new_tokens=n, batch_size=1)
        sync_device(eng.device)
        return time.perf_counter() - t

    timed(a.tokens)  # warm-up
    full = [timed(a.tokens) for _ in range(a.reps)]
    one = [timed(1) for _ in range(a.reps)]  # prefill + first token
    decode_s = statistics.median(full) - statistics.median(one)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu = gpu_used_bytes()  # the caching allocator keeps what generation took: in use ≈ this process's peak
    model_bytes = weight_bytes(eng.model)
    out = {
        "device": eng.device,
        "tokens": a.tokens,
        "latency_s": statistics.median(full),
        "latencies_s": full,
        "prefill_s": statistics.median(one),
        "decode_tokens_per_s": (a.tokens - 1) / decode_s,
        "model_bytes": model_bytes,
        "peak_rss_bytes": rss_peak,
        "gpu_bytes": None if gpu0 is None or gpu is None else gpu - gpu0,
        "read_bandwidth_bytes_per_s": read_bandwidth(eng.device),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
