"""Where a generation's time goes inside the packed predictor's process, torch op by torch op.

The chain's three generations (one base generation, the five agents as one mixed-adapter batch, the aggregator over
their answers) are each timed without a profiler (best of `--reps`), then run once under `torch.profiler`: the
time spent inside torch's ops (by op: fbgemm's float16 GEMM, MKL's `mm`, attention, the KV cache's `cat`, …) and
the rest, which is Python: transformers' decoding loop, peft's LoRA layers, cmva's hooks. Also timed: one
`PeftModel.disable_adapter()` context, which the base and the fused mixed-adapter paths enter once per batch.

    .venv/bin/python -m bench.decode_ops --artifacts RUN/serving/channels/staging [--dtypes float16-weights,float32]

Writes bench/results/decode_ops.md (+ .json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import write_result
from bench.serving import PROFILE, QUESTIONS
from bench.serving_profile import best, packed_engine

TOP = 6  # ops listed per generation


def op_seconds(fn) -> dict[str, dict]:
    """Self time (s) and calls of every torch op in one call of `fn`, under torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key: {"s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in prof.key_averages()}


def split(fn, reps: int) -> dict:
    """Wall time of `fn` (best of `reps`, no profiler), its time in torch ops and the rest, its busiest ops."""
    wall = best(fn, reps)
    ops = op_seconds(fn)
    in_ops = sum(o["s"] for o in ops.values())
    ops = dict(sorted(ops.items(), key=lambda kv: -kv[1]["s"]))  # busiest first
    return {"wall_s": wall, "in_ops_s": in_ops, "outside_ops_s": max(wall - in_ops, 0.0), "ops": ops}


def generations(art: Path, dtype: str, tokens: int, reps: int) -> dict:
    """`split` of the chain's three generations and of one `disable_adapter()` context, the base in `dtype`."""
    from cmva.engine import BASE
    from cmva.prompts import agent_messages, aggregator_messages

    engine = packed_engine(art, dtype)
    values, q = list(PROFILE), QUESTIONS[0]
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=8)
    answers = dict(zip(values, engine.generate([agent_messages(q)] * 5, values, **kw), strict=True))
    agg = [aggregator_messages(q, PROFILE, answers, None)]

    def toggle():
        with engine.model.disable_adapter():
            pass

    return {
        "dtype": engine.dtype,
        "steps": {
            "base generation": split(lambda: engine.generate([agent_messages(q)], [BASE], **kw), reps),
            "agents (5, one batch)": split(lambda: engine.generate([agent_messages(q)] * 5, values, **kw), reps),
            "aggregator": split(lambda: engine.generate(agg, ["aggregator"], **kw), reps),
        },
        "disable_adapter_s": best(toggle, reps),
    }


def main(argv=None) -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True, help="base/, agents/<value>/, aggregator/")
    p.add_argument("--dtypes", default="float16-weights,float32")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    modes = [generations(a.artifacts, d, a.tokens, a.reps) for d in a.dtypes.split(",")]
    result = {"artifacts": str(a.artifacts), "tokens": a.tokens, "threads": torch.get_num_threads(), "modes": modes}
    print(write_result("decode_ops", result, render(result), a.out))
    return result


def render(r: dict) -> str:
    lines = [
        f"Artifacts `{r['artifacts']}`; every generation {r['tokens']} new tokens; {r['threads']} threads; wall: best "
        "of the repetitions without the profiler; in torch ops: one run under torch.profiler (self times summed); "
        "outside: the rest (Python: transformers' loop, peft's layers, cmva's hooks).",
        "",
        "| dtype | generation | wall s | in torch ops s | outside s | busiest ops (s, calls) |",
        "|---|---|---|---|---|---|",
    ]
    for m in r["modes"]:
        for name, s in m["steps"].items():
            ops = "; ".join(f"{k} {v['s']:.2f} ({v['calls']})" for k, v in list(s["ops"].items())[:TOP])
            lines.append(
                f"| {m['dtype']} | {name} | {s['wall_s']:.2f} | {s['in_ops_s']:.2f} | {s['outside_ops_s']:.2f} | {ops} |"
            )
    lines += ["", "| dtype | one `disable_adapter()` context, s |", "|---|---|"]
    lines += [f"| {m['dtype']} | {m['disable_adapter_s']:.3f} |" for m in r["modes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
