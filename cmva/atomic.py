"""Write to a scratch location, then rename into place: readers see the old state or the new one, never half.

`atomic_dir(dest)` is the one helper for directories (artifact store, KFP outputs, caches);
`swap_symlink` replaces what a link points at in one `rename(2)`; `write_text_atomic` does the same for
one file. Scratch entries are named `.tmp-*` beside their destination and are removed whatever happens.

Example:
    >>> with atomic_dir(Path("runs/x/base")) as tmp:          # doctest: +SKIP
    ...     (tmp / "model.safetensors").write_bytes(b"...")
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

Exist = Literal["error", "keep", "replace"]


def _scratch_name(dest: Path) -> Path:
    return dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:12]}"


def remove_tree(path: Path) -> None:
    """Remove `path` (directory, file or link) without following a link; missing is fine.

    A directory is first renamed aside, so it vanishes from its name in one step.
    """
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    trash = _scratch_name(path)
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _commit(tmp: Path, dest: Path, exist: Exist) -> None:
    """Rename `tmp` to `dest`; `exist` says what happens when `dest` is already there."""
    if exist == "replace":
        remove_tree(dest)  # not atomic: for paths no reader watches (see atomic_dir)
    elif os.path.lexists(dest):
        if exist == "keep":
            return
        raise FileExistsError(errno.EEXIST, "already exists", str(dest))
    try:
        os.rename(tmp, dest)
    except OSError as e:  # another writer got there between the check and the rename
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or exist == "replace":
            raise
        if exist == "error":
            raise FileExistsError(errno.EEXIST, "already exists", str(dest)) from e


@contextlib.contextmanager
def atomic_dir(dest: str | Path, exist: Exist = "error") -> Iterator[Path]:
    """Yield a fresh scratch directory beside `dest`; when the block succeeds it is renamed to `dest`.

    exist: what happens when `dest` exists at that moment. "error": FileExistsError (with concurrent
    writers exactly one wins); "keep": the existing one stays and ours is dropped (caches of identical
    content); "replace": the old one is removed first — two steps, so only for paths no reader watches
    (a component's own output). Readers that must see old or new across a replacement go through a
    link swapped with `swap_symlink` (LocalStore does). The scratch directory never outlives the block.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch_name(dest)
    tmp.mkdir()
    try:
        yield tmp
        _commit(tmp, dest, exist)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` in one rename: readers resolve the old target or the new one."""
    tmp = _scratch_name(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file through a scratch file and a rename: never seen half-written."""
    path = Path(path)
    tmp = _scratch_name(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
