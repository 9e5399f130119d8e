"""bench/shape_clone: a run's artifacts travel without their weights and come back servable (same shapes, new
random values, manifests that verify), so bench/serving can run where the weights cannot be sent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.shape_clone import SHAPES, pack, unpack
from cmva.storage import MANIFEST, build_manifest, verify_dir


@pytest.fixture
def channel(tiny_base: Path, tmp_path: Path) -> Path:
    """A staging channel as promotion leaves it: artifacts are links into .versions/, a release record beside."""
    root = tmp_path / "staging"
    version = root / ".versions" / "base" / "v1"
    shutil.copytree(tiny_base, version)
    (version / MANIFEST).write_text(json.dumps(build_manifest(version, "base")))
    (root / "base").symlink_to(version.relative_to(root))
    (root / "release").mkdir()
    (root / "release" / "release.json").write_text('{"run_id": "r1"}')
    return root


def test_pack_leaves_weights_behind_and_unpack_rebuilds_a_servable_model(channel: Path, tmp_path: Path):
    from safetensors.torch import load_file

    from cmva.engine import Engine

    packed = tmp_path / "packed"
    size = pack(channel, packed)
    weights = channel / "base" / "model.safetensors"
    assert (packed / "base" / ("model.safetensors" + SHAPES)).stat().st_size < 100_000  # names, shapes, dtypes
    assert not (packed / "base" / "model.safetensors").exists()
    assert not (packed / "release").exists() and not (packed / ".versions").exists()
    assert size < weights.stat().st_size  # the rest is configs and the tokenizer

    clone = tmp_path / "clone"
    unpack(packed, clone)
    old, new = load_file(weights), load_file(clone / "base" / "model.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in old.items()} == {k: (v.shape, v.dtype) for k, v in new.items()}
    matrices = [k for k, v in old.items() if v.dim() == 2]
    assert matrices and all(not new[k].equal(old[k]) for k in matrices)
    verify_dir(clone / "base", json.loads((clone / "base" / MANIFEST).read_text()), "clone")  # raises if stale
    out = Engine(clone / "base").complete([[{"role": "user", "content": "hi"}]], max_new_tokens=3, min_new_tokens=3)
    assert out[0].completion_tokens == 3
