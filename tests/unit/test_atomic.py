"""The one "write to a scratch dir, then rename into place" helper and its users (KFP outputs, caches)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cmva.atomic import atomic_dir, swap_symlink, write_text_atomic
from cmva.kfp_ops import atomic_dir as kfp_atomic_dir


def _scratch(parent) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".tmp-")]


def test_block_failure_leaves_neither_dest_nor_scratch(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        assert not (tmp_path / "out").exists()  # nothing visible while the block runs
        raise RuntimeError("killed")
    assert not (tmp_path / "out").exists() and _scratch(tmp_path) == []


def test_exist_error_keep_replace(tmp_path):
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "f").write_text("first")
    with pytest.raises(FileExistsError), atomic_dir(dest) as tmp:
        (tmp / "f").write_text("second")
    with atomic_dir(dest, exist="keep") as tmp:
        (tmp / "f").write_text("third")
    assert (dest / "f").read_text() == "first"
    with atomic_dir(dest, exist="replace") as tmp:
        (tmp / "f").write_text("fourth")
    assert (dest / "f").read_text() == "fourth" and _scratch(tmp_path) == []


def test_concurrent_writers_exactly_one_wins(tmp_path):
    dest, barrier, results = tmp_path / "out", threading.Barrier(6), []

    def write(i):
        try:
            with atomic_dir(dest) as tmp:
                (tmp / "who").write_text(str(i))
                barrier.wait()  # every writer has its scratch dir ready, then all commit at once
            results.append(i)
        except FileExistsError:
            results.append(None)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and (dest / "who").read_text() == str(winners[0])
    assert _scratch(tmp_path) == []


def test_swap_symlink_is_one_rename(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = tmp_path / "cur"
    swap_symlink(link, "a")
    swap_symlink(link, "b")
    assert os.readlink(link) == "b" and _scratch(tmp_path) == []


def test_write_text_atomic_replaces_whole_file(tmp_path):
    p = tmp_path / "r.json"
    write_text_atomic(p, "old")
    write_text_atomic(p, "new")
    assert p.read_text() == "new" and _scratch(tmp_path) == []


def test_kfp_output_replaces_leftovers_and_survives_a_failed_attempt(tmp_path):
    out = tmp_path / "outputs" / "agent"
    out.mkdir(parents=True)
    (out / "leftover.bin").write_bytes(b"from an earlier attempt")
    with pytest.raises(RuntimeError), kfp_atomic_dir(str(out)) as d:
        Path(d, "adapter.bin").write_bytes(b"half")
        raise RuntimeError("oom")
    assert [p.name for p in out.iterdir()] == ["leftover.bin"] and _scratch(out.parent) == []
    with kfp_atomic_dir(str(out)) as d:
        Path(d, "adapter.bin").write_bytes(b"done")
    assert [p.name for p in out.iterdir()] == ["adapter.bin"] and _scratch(out.parent) == []
