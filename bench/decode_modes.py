"""Where a base generation's time goes on this machine, and what the per-token leads of bench/serving's (a) give.

    .venv/bin/python -m bench.decode_modes --base RUN/base [--tokens 32] [--reps 3] [--device cuda]

Each mode in a fresh process (so one's compiled graphs or allocator state do not help another): one greedy
generation of `tokens` new tokens (min = max) of the agent prompt, best of `reps` after a warm-up whose time is
reported apart (for `compile` it is the compilation):
- `eager` — transformers' default dynamic KV cache, float32 (what the servers run);
- `static` — `cache_implementation="static"`;
- `compile` — static cache + `torch.compile` of the forward pass (transformers' CompileConfig, which compiles on
  CUDA only unless told otherwise, is told to compile on the CPU too; on CUDA its default mode replays CUDA graphs);
- `bfloat16` — eager in bfloat16 (a server's `--dtype bfloat16`).
Then a torch.profiler table of one float32 decode step by operator (self CPU time: on a GPU, what launching costs).
Writes bench/results/decode_modes.md (+ .json). `--device` defaults to cuda where there is one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import sync_device, write_result

MODES = ("eager", "static", "compile", "bfloat16")
QUESTION = "My friend asked me to lie to her parents about where she was. Should I?"


def one_mode(base: str, mode: str, tokens: int, reps: int, device: str = "cpu") -> dict:
    """Time one mode in this process (called in a child: `--mode`)."""
    import torch
    from transformers import CompileConfig

    from cmva.models import load_causal_lm, load_tokenizer
    from cmva.prompts import agent_messages

    tok = load_tokenizer(base)
    model = load_causal_lm(base, dtype="bfloat16" if mode == "bfloat16" else "float32", exact=True).to(device)
    text = tok.apply_chat_template(agent_messages(QUESTION), tokenize=False, add_generation_prompt=True)
    enc = tok([text], return_tensors="pt").to(device)
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    if mode in ("static", "compile"):
        kw["cache_implementation"] = "static"
    if mode == "compile":
        cfg = CompileConfig(fullgraph=False, dynamic=False)
        cfg._compile_all_devices = True  # transformers compiles on CUDA only by default
        kw["compile_config"] = cfg

    def run() -> float:
        sync_device(device)
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, **kw)
        sync_device(device)
        return time.perf_counter() - t

    first = run()
    times = [run() for _ in range(reps)]
    return {"first_s": first, "best_s": min(times), "times_s": times, "prompt_tokens": enc.input_ids.shape[1]}


def op_profile(base: str, rows: int = 8, device: str = "cpu") -> list[dict]:
    """Self CPU time by operator over 5 float32 decode steps (batch 1, 44-token context)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cmva.models import load_causal_lm

    model = load_causal_lm(base).to(device)
    with torch.inference_mode():
        cache = model(torch.randint(0, 1000, (1, 44), device=device), use_cache=True).past_key_values
        nxt = torch.tensor([[5]], device=device)
        for _ in range(3):
            model(nxt, past_key_values=cache, use_cache=True)
        sync_device(device)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(5):
                model(nxt, past_key_values=cache, use_cache=True)
            sync_device(device)
    ev = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev)
    return [
        {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 5e3, "share": e.self_cpu_time_total / total}
        for e in ev[:rows]
    ]


def render(r: dict) -> str:
    eager = r["modes"]["eager"]["best_s"]
    lines = [
        f"Base `{r['base']}` on {r.get('device', 'cpu')}; {r['tokens']} new tokens, greedy, batch 1; best of "
        f"{r['reps']} after a warm-up.",
        "",
    ]
    lines += ["| mode | warm-up (s) | generation (s) | ÷ eager |", "|---|---|---|---|"]
    for m, x in r["modes"].items():
        lines.append(f"| {m} | {x['first_s']:.2f} | {x['best_s']:.3f} | {x['best_s'] / eager:.2f} |")
    lines += [
        "",
        "One float32 decode step by operator (self CPU time):",
        "",
        "| op | ms per step | share |",
        "|---|---|---|",
    ]
    lines += [f"| `{o['op']}` | {o['self_ms_per_step']:.2f} | {o['share']:.0%} |" for o in r["ops"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="a base model directory (RUN/base)")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    p.add_argument("--device", help="cpu | cuda (default: cuda where there is one)")
    p.add_argument("--out", help="results directory (default bench/results)")
    a = p.parse_args(argv)
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.mode:
        print(json.dumps(one_mode(a.base, a.mode, a.tokens, a.reps, a.device)))
        return
    modes = {}
    for m in MODES:
        cmd = [sys.executable, "-m", "bench.decode_modes", "--base", a.base, "--mode", m, "--device", a.device]
        out = subprocess.run([*cmd, "--tokens", str(a.tokens), "--reps", str(a.reps)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"mode {m} failed:\n{out.stderr[-3000:]}")
        modes[m] = json.loads(out.stdout.strip().splitlines()[-1])
    ops = op_profile(a.base, device=a.device)
    result = {"base": a.base, "device": a.device, "tokens": a.tokens, "reps": a.reps, "modes": modes, "ops": ops}
    print(write_result("decode_modes", result, render(result), a.out))


if __name__ == "__main__":
    main()
