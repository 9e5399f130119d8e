"""Why `float16-weights` (cmva.cpu_linear): the base model's linear layers at the row counts of decoding, float32
(torch's `F.linear`, MKL on x86 CPUs) against float16-packed weights (fbgemm), on this machine.

    .venv/bin/python -m bench.linear_kernels [--rows 1,5,16,40,512]

One "round" is one of each of SmolLM2-135M's linear shapes per decoder layer (q, k, v, o, gate, up, down) plus
1/30 of its output head, so 30 rounds are one decode step's linear work at that many rows (prompts in a batch).
Reported: ms per decode step's linear layers, the bytes of float32 weights read per second, and the speed-up.
Writes bench/results/linear_kernels.md (+ .json).
"""

from __future__ import annotations

import argparse
import time

from bench.common import write_result

HIDDEN, INTER, KV, VOCAB, LAYERS = 576, 1536, 192, 49152, 30  # SmolLM2-135M
SHAPES = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN), (INTER, HIDDEN), (INTER, HIDDEN)]
SHAPES += [(HIDDEN, INTER)]


def step_seconds(layers, rows: int, reps: int) -> float:
    """Best time of one decode step's linear work (every layer `LAYERS` times, the head once) at `rows` rows."""
    import torch

    xs = [torch.randn(rows, f.in_features) for f in layers]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps + 1):  # the first is a warm-up
            t = time.perf_counter()
            for _ in range(LAYERS):
                for f, x in zip(layers[:-1], xs[:-1], strict=True):
                    f(x)
            layers[-1](xs[-1])
            best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    import torch

    from cmva.cpu_linear import Float16WeightLinear

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,5,16,40,512")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    fp32 = [torch.nn.Linear(i, o, bias=False) for o, i in [*SHAPES, (VOCAB, HIDDEN)]]
    f16 = [Float16WeightLinear.of(f) for f in fp32]
    weight_bytes = sum(f.weight.numel() * 4 for f in fp32[:-1]) * LAYERS + fp32[-1].weight.numel() * 4
    rows = []
    for n in (int(r) for r in a.rows.split(",")):
        t32, t16 = step_seconds(fp32, n, a.reps), step_seconds(f16, n, a.reps)
        rows.append(
            {"rows": n, "float32_s": t32, "float16_weights_s": t16, "float32_weight_gb_s": weight_bytes / t32 / 1e9}
        )
    result = {"weight_bytes_float32": weight_bytes, "threads": torch.get_num_threads(), "rows": rows}
    print(write_result("linear_kernels", result, render(result), a.out))


def render(r: dict) -> str:
    lines = [
        f"One decode step's linear layers of SmolLM2-135M ({r['weight_bytes_float32'] / 2**20:.0f} MiB of float32 "
        f"weights), random weights, {r['threads']} threads, best of the repetitions.",
        "",
        "| rows | float32 (MKL) | float32 weights read | float16-weights (fbgemm) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['rows']} | {x['float32_s'] * 1e3:.1f} ms | {x['float32_weight_gb_s']:.1f} GB/s | "
            f"{x['float16_weights_s'] * 1e3:.1f} ms | {x['float32_s'] / x['float16_weights_s']:.2f} × |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
