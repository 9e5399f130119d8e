"""A hostile `_manifest.json` on S3 (bench/reliability, part j): moto's server over HTTP, the real minio client.

A real artifact is published, then its manifest is replaced by one listing a path that would land outside
the cache: an absolute path (with an object at that key, so only the check can stop it), `..` climbing out
of the download's scratch directory to a sibling of the cache, and `..` after a subdirectory. `get()` must
raise a StorageError naming the path, and no file may appear anywhere outside the cache.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

from cmva.serving.launcher import free_port_block
from cmva.storage import MANIFEST, S3Store, StorageError, sha256_file


def _files(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip}


def hostile_manifest(work: Path) -> dict:
    from moto.server import ThreadedMotoServer

    from cmva.config import StorageSettings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root = work / "hostile-manifest"
    shutil.rmtree(root, ignore_errors=True)
    cache, src, outside = root / "cache", root / "src", root / "outside"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "sub" / "config.json").write_text('{"a": 1}')
    payload = root / "payload.bin"
    payload.write_bytes(b"pwned")
    port = free_port_block(1)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    settings = StorageSettings(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        max_retries=1,
        backoff_s=0.05,
    )
    # The download's scratch dir is cache/<bucket>/p/<name>/.tmp-…: five levels up is `root`.
    paths = {
        "absolute": str(outside / "absolute.txt"),
        "dotdot": "../../../../../outside/dotdot.txt",
        "nested_dotdot": "sub/../../../../../../outside/nested.txt",
    }
    attempts = []
    try:
        for kind, rel in paths.items():
            store = S3Store(f"s3://hostile-{kind.replace('_', '-')}/p", settings, cache_dir=cache)
            store.publish(src, "evil")
            if kind == "absolute":  # an object where unchecked code would fetch it from
                store.client.fput_object(store.bucket, store._key("evil", rel), str(payload))
            manifest = {"format": 1, "name": "evil", "files": {rel: {"sha256": sha256_file(payload), "size": 5}}}
            data = json.dumps(manifest).encode()
            store.client.put_object(store.bucket, store._key("evil", MANIFEST), io.BytesIO(data), len(data))
            before = _files(root, cache)
            try:
                store.get("evil")
                error, error_type = "get() returned an artifact", None
            except StorageError as e:
                error, error_type = str(e), type(e).__name__
            written = sorted(_files(root, cache) - before)
            leftovers = (
                sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []
            )
            attempts.append(
                {"kind": kind, "path": rel, "error_type": error_type, "error": error[:300]}
                | {"error_names_path": repr(rel) in error, "written_outside_cache": written}
                | {"files_left_in_cache": leftovers}
            )
    finally:
        moto.stop()
    return {
        "attempts": attempts,
        "refused": sum(a["error_type"] is not None and a["error_names_path"] for a in attempts),
        "written_outside_cache": sum(len(a["written_outside_cache"]) for a in attempts),
        "outside_dir_exists": outside.exists(),
    }
