"""A trained run's serving artifacts with their weights left behind: same files, same tensor shapes, random values.

A machine that cannot receive the weights (a lent GPU reached through a 64 MiB transfer) rebuilds them from
their shapes. Serving speed and memory depend on shapes and token counts, not on what the weights learned
(bench/serving forces every generation to exactly `--tokens` new tokens), so the clone does the trained run's
work, except that the aggregator reads random tokens as the agents' answers; the answers' text means nothing.

    python -m bench.shape_clone pack RUN/serving/channels/staging .gpu/shapes   # here: configs, tokenizers, headers
    python -m bench.shape_clone unpack .gpu/shapes bench/.work/shape-run        # there: random weights, new manifests

`pack` copies every file except large `*.safetensors` (for those, the tensors' names, shapes and dtypes) and the
channel's own bookkeeping (its release record names the trained run, whose files these are not); `unpack` writes
the weights (norm weights 1, biases 0, other floats N(0, 0.02), integer buffers 0…n−1) and rebuilds each
`_manifest.json` so the predictors' checksum verification passes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from cmva.storage import MANIFEST, build_manifest

SKIP_DIRS = {".versions", "serve-logs", "release"}  # release: the record of the run, which the clone is not
SHAPES = ".shapes.json"  # suffix of a replaced weights file's description
SMALL = 1 << 20  # weights files up to this size travel as they are


def safetensors_header(path: Path) -> dict:
    """The tensors' names, dtypes and shapes of a safetensors file, and its metadata (no tensor data read)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: {"dtype": f.get_slice(k).get_dtype(), "shape": f.get_slice(k).get_shape()} for k in f.keys()}
        return tensors | {"__metadata__": f.metadata() or {}}


def _files(root: Path) -> list[Path]:
    """Every file under `root`, through symbolic links (a channel's artifacts are links to its versions)."""
    found = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        found += [Path(d) / f for f in sorted(files)]
    return found


def pack(src: Path, dst: Path) -> int:
    """Copy `src` to `dst` without large weights (their headers instead); returns the bytes written."""
    total = 0
    for p in _files(src):
        rel = p.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".safetensors" and p.stat().st_size > SMALL:
            out = out.with_name(p.name + SHAPES)
            out.write_text(json.dumps(safetensors_header(p)))
        else:
            shutil.copyfile(p, out)
        total += out.stat().st_size
    return total


def random_tensor(name: str, dtype: str, shape: list[int], gen):
    import torch

    tdtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}[dtype]
    if not tdtype.is_floating_point:
        return torch.arange(shape[-1] if shape else 1, dtype=tdtype).expand(shape).contiguous()
    if len(shape) == 1 and name.endswith("bias"):
        return torch.zeros(shape, dtype=tdtype)
    if len(shape) == 1:
        return torch.ones(shape, dtype=tdtype)  # norm weights
    return (torch.randn(shape, generator=gen) * 0.02).to(tdtype)


def unpack(src: Path, dst: Path, seed: int = 0) -> None:
    """Rebuild the artifacts of `pack(…, src)` in `dst`, weights random, manifests recomputed."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for desc in sorted(dst.rglob("*" + SHAPES)):
        header = json.loads(desc.read_text())
        meta = header.pop("__metadata__", {}) or None
        tensors = {k: random_tensor(k, v["dtype"], v["shape"], gen) for k, v in header.items()}
        save_file(tensors, str(desc.with_name(desc.name.removesuffix(SHAPES))), metadata=meta)
        desc.unlink()
    for manifest in sorted(dst.rglob(MANIFEST)):
        old = json.loads(manifest.read_text())
        manifest.write_text(json.dumps(build_manifest(manifest.parent, old.get("name", manifest.parent.name))))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("verb", choices=["pack", "unpack"])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    a = p.parse_args(argv)
    if a.verb == "pack":
        print(f"packed {pack(a.src, a.dst) / 2**20:.1f} MiB into {a.dst}")
    else:
        unpack(a.src, a.dst)
        print(f"unpacked into {a.dst}")


if __name__ == "__main__":
    main()
