"""What every benchmark shares: the machine's description and writing a result (JSON + Markdown)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

from cmva.atomic import write_text_atomic

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """CPU model, usable cores, memory, GPU and library versions of the machine the bench ran on."""
    import torch

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
        platform.processor(),
    )
    mem_kb = next((int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def git_commit(where: str | Path = Path(__file__).parent) -> str:
    """Short commit of the checkout at `where` (with `-dirty` when it has uncommitted changes)."""

    def run(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True).stdout.strip()

    commit = run("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")


def write_result(name: str, result: dict, markdown: str, out_dir: str | Path | None = None) -> Path:
    """Write `<name>.json` and `<name>.md` (date, commit and machine on top) atomically; returns the Markdown path.

    `commit` is the code the figures were measured at: the bench's checkout unless the result names its own
    (bench/run_summary: the checkout the run was made in).
    """
    out = Path(out_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    m = machine()
    result = {"bench": name, "date": when, "commit": result.get("commit") or git_commit(), "machine": m, **result}
    head = (
        f"# bench/{name}\n\n{when}, commit {result['commit']} — {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"
        + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU")
        + f"; torch {m['torch']}\n\n"
    )
    for path, text in ((out / f"{name}.json", json.dumps(result, indent=2)), (out / f"{name}.md", head + markdown)):
        write_text_atomic(path, text)
    return out / f"{name}.md"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"{'met' if ok else 'MISSED'} (target {'≥' if higher_is_better else '≤'} {target:g})"


def gpu_used_bytes() -> int | None:
    """Memory in use on GPU 0, all processes (nvidia-smi, so no CUDA context of our own); None without a GPU."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--id=0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return int(out.split()[0]) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def sync_device(device: str) -> None:
    """Wait for the GPU's queued work (timings on CUDA); nothing on a CPU."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
