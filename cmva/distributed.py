"""Data-parallel training: the recipe's global batch split over N processes, rank 0 alone writing artifacts.

torchrun (or `accelerate launch`) starts N copies of a training stage and sets RANK, WORLD_SIZE and LOCAL_RANK in
each. transformers' Trainer, so TRL's RLOO and SFT trainers too, reads them through accelerate and trains with DDP:
every rank reads its shard of each batch, gradients are averaged, the weights stay equal on every rank. cmva adds
three things: the recipe's batch is the global one (`per_device_batch` divides it by the world size), rank 0 alone
writes artifacts (`is_main`), and a stage that asks for N processes starts them (`call`, gloo on CPU, nccl on GPU).

Example:
    $ cmva train-agent --value care --artifacts runs/paper --profile paper --nproc 8

    >>> per_device_batch(256, grad_accum=8, world=4)
    8
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def world_size() -> int:
    """Processes training together (WORLD_SIZE, set by torchrun / accelerate launch); 1 when not launched."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (RANK); 0 when not launched."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes artifacts, logs and plots: rank 0 alone."""
    return rank() == 0


def launched() -> bool:
    """Whether this process was started by torchrun / accelerate launch (a stage must not launch again)."""
    return "WORLD_SIZE" in os.environ


def backend() -> str:
    """The torch.distributed backend: nccl between GPUs, gloo between CPU processes."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def per_device_batch(
    global_batch: int, grad_accum: int = 1, field: str = "batch size", world: int | None = None
) -> int:
    """Rows (completions for RL) each process takes per micro-step so that an optimisation step sees `global_batch`.

    Raises:
        ValueError: naming `field` when the global batch does not split evenly over the processes and accumulation
            steps (a silently different global batch would change the recipe's training).
    """
    world = world or world_size()
    if global_batch <= 0 or grad_accum <= 0 or global_batch % (grad_accum * world):
        raise ValueError(
            f"{field}: the global batch {global_batch} does not split over {world} process(es) × {grad_accum} "
            f"gradient accumulation step(s); make it a multiple of {grad_accum * world} or launch another number "
            "of processes"
        )
    return global_batch // (grad_accum * world)


def call(nproc: int, fn: Callable, *args, **kwargs) -> None:
    """`fn(*args, **kwargs)` here when `nproc` is 1 (or this process was launched already), else in `nproc` processes.

    This is what a stage (CLI `--nproc`, a KFP component asking for N GPUs) calls; `fn` is a training function whose
    rank 0 writes the artifact, so nothing comes back but the files.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be ≥ 1, got {nproc}")
    if nproc == 1 or launched():
        fn(*args, **kwargs)
    else:
        launch(nproc, fn, *args, **kwargs)


def torchrun_command(nproc: int, call_file: Path) -> list[str]:
    """The torchrun command line that runs the call pickled in `call_file` in `nproc` local processes."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*run, "-m", __name__, str(call_file)]


def launch(nproc: int, fn: Callable, *args, **kwargs) -> None:
    """Run `fn(*args, **kwargs)` in `nproc` processes under torchrun and wait for them.

    Raises:
        RuntimeError: If any process fails (torchrun then stops the others).
    """
    package_root = str(Path(__file__).resolve().parents[1])  # the children import this same cmva
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix="cmva-launch-") as tmp:
        call_file = Path(tmp) / "call.pkl"
        call_file.write_bytes(pickle.dumps((fn, args, kwargs)))
        log.info("launching %s in %d processes (torchrun)", fn.__qualname__, nproc)
        done = subprocess.run(torchrun_command(nproc, call_file), env=env)
    if done.returncode:
        raise RuntimeError(f"{fn.__qualname__} failed in {nproc} processes (exit {done.returncode}): see the log above")


def _run_call(call_file: str) -> None:
    """Child side of `launch`: unpickle the call (written by `launch` a moment ago, never an artifact) and run it."""
    import torch.distributed as dist

    logging.basicConfig(
        level=logging.INFO if is_main() else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    fn, args, kwargs = pickle.loads(Path(call_file).read_bytes())
    try:
        fn(*args, **kwargs)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    _run_call(sys.argv[1])
