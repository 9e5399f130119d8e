"""Artifact store: a local directory (the embedded default) or S3/MinIO for `s3://bucket/prefix` URIs.

An artifact is a named directory of files plus `_manifest.json` listing each file's sha256 and size.
Publishing is atomic for readers: files go up first, the manifest last, and an artifact without a
manifest does not exist. Readers verify every file against the manifest.

Example:
    >>> store = open_store("runs/demo")                      # or "s3://cmva/runs/demo"
    >>> store.publish(Path("out/rewards"), "rewards")        # doctest: +SKIP
    >>> local_dir = store.get("rewards")                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

MANIFEST = "_manifest.json"


class StorageError(RuntimeError):
    """Base class of artifact store errors."""


class ArtifactNotFoundError(StorageError):
    """No complete (manifested) artifact under that name."""


class ArtifactExistsError(StorageError):
    """Publishing would replace an artifact and `overwrite` was not given."""


class ChecksumMismatchError(StorageError):
    """A file does not match the manifest: the artifact is corrupt or was tampered with."""


class StorageUnavailableError(StorageError):
    """The S3 endpoint could not be reached after the configured retries."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk_files(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            yield p


def build_manifest(local_dir: Path, name: str) -> dict:
    """Manifest of every file under `local_dir` (relative POSIX paths → sha256 and size)."""
    if not local_dir.is_dir():
        raise StorageError(f"cannot publish {local_dir}: not a directory")
    files = {
        p.relative_to(local_dir).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _walk_files(local_dir)
    }
    if not files:
        raise StorageError(f"cannot publish {local_dir}: it holds no files")
    return {"format": 1, "name": name, "created": time.time(), "files": files}


def verify_dir(local_dir: Path, manifest: dict, where: str) -> None:
    """Check every file of the manifest exists in `local_dir` with the right sha256.

    Raises:
        ChecksumMismatchError: Naming the first bad file.
    """
    for rel, meta in manifest["files"].items():
        p = local_dir / rel
        if not p.is_file():
            raise ChecksumMismatchError(f"{where}: file {rel!r} listed in the manifest is missing")
        digest = sha256_file(p)
        if digest != meta["sha256"]:
            raise ChecksumMismatchError(
                f"{where}: sha256 of {rel!r} is {digest[:12]}…, manifest says {meta['sha256'][:12]}…"
            )


def _check_name(name: str) -> str:
    parts = Path(name).parts
    if not name or name.startswith("/") or ".." in parts or any(p.startswith(".") for p in parts):
        raise ValueError(f"invalid artifact name {name!r}: use a relative path like 'agents/care'")
    return Path(name).as_posix()


class ArtifactStore(Protocol):
    """What every store offers."""

    uri: str

    def exists(self, name: str) -> bool: ...

    def publish(self, local_dir: Path, name: str, overwrite: bool = False) -> dict: ...

    def get(self, name: str) -> Path: ...

    def uri_of(self, name: str) -> str: ...


class LocalStore:
    """Artifacts as directories under `root`; publish = copy to a temp dir + atomic rename."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def uri_of(self, name: str) -> str:
        return str(self.root / _check_name(name))

    def exists(self, name: str) -> bool:
        return (self.root / _check_name(name) / MANIFEST).is_file()

    def publish(self, local_dir: Path, name: str, overwrite: bool = False) -> dict:
        name = _check_name(name)
        dest = self.root / name
        local_dir = Path(local_dir).resolve()
        if self.exists(name) and not overwrite:
            raise ArtifactExistsError(f"artifact {name!r} already exists in {self.uri}")
        manifest = build_manifest(local_dir, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if local_dir == dest:  # published in place: the manifest alone makes it visible
            _write_json_atomic(dest / MANIFEST, manifest)
            return manifest
        tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(local_dir, tmp, ignore=shutil.ignore_patterns(MANIFEST))
        _write_json_atomic(tmp / MANIFEST, manifest)
        if dest.exists():
            trash = dest.parent / f".trash-{dest.name}-{uuid.uuid4().hex[:8]}"
            os.replace(dest, trash)
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        return manifest

    def get(self, name: str) -> Path:
        name = _check_name(name)
        d = self.root / name
        if not (d / MANIFEST).is_file():
            raise ArtifactNotFoundError(f"no artifact {name!r} in {self.uri}")
        verify_dir(d, json.loads((d / MANIFEST).read_text()), f"{self.uri}/{name}")
        return d


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


class S3Store:
    """Artifacts under `s3://bucket/prefix/<name>/` through the `minio` client.

    Reads go through a local cache directory (verified against the manifest, keyed by its sha256),
    so a model server or a pipeline step downloads each artifact once.
    """

    def __init__(self, uri: str, settings=None, cache_dir: str | Path | None = None):
        import urllib3
        from minio import Minio

        from cmva.config import StorageSettings

        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"s3 URI without a bucket: {uri!r}")
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.settings = settings or StorageSettings()
        host, tls = self.settings.host_and_tls()
        self.endpoint = f"{'https' if tls else 'http'}://{host}"
        s = self.settings
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=s.timeout_s, read=s.timeout_s * 6),
            retries=urllib3.Retry(
                total=s.max_retries,
                backoff_factor=s.backoff_s,
                status_forcelist=(500, 502, 503, 504),
                allowed_methods=None,  # retry PUT too: our object writes are idempotent
            ),
            cert_reqs="CERT_REQUIRED" if s.verify_ssl else "CERT_NONE",
        )
        self.client = Minio(
            host,
            access_key=s.access_key,
            secret_key=s.secret_key,
            secure=tls,
            region=s.region,
            http_client=http,
            cert_check=s.verify_ssl,
        )
        default_cache = Path(os.environ.get("CMVA_CACHE", Path.home() / ".cache" / "cmva"))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache / "s3"

    def _key(self, name: str, rel: str = "") -> str:
        parts = [p for p in (self.prefix, _check_name(name), rel) if p]
        return "/".join(parts)

    def uri_of(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one client call; turn transport failures into a clear StorageUnavailableError."""
        import urllib3

        try:
            return fn(*args, **kwargs)
        except (urllib3.exceptions.MaxRetryError, urllib3.exceptions.HTTPError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise StorageUnavailableError(
                f"S3 endpoint {self.endpoint} unreachable while trying to {what} "
                f"(after {self.settings.max_retries} retries): {reason}"
            ) from e

    def _read_manifest(self, name: str) -> dict | None:
        from minio.error import S3Error

        try:
            resp = self._call("read a manifest", self.client.get_object, self.bucket, self._key(name, MANIFEST))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        try:
            return json.loads(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, name: str) -> bool:
        return self._read_manifest(name) is not None

    def publish(self, local_dir: Path, name: str, overwrite: bool = False) -> dict:
        local_dir = Path(local_dir)
        manifest = build_manifest(local_dir, name)
        if not self._call("check the bucket", self.client.bucket_exists, self.bucket):
            self._call("create the bucket", self.client.make_bucket, self.bucket)
        if self._read_manifest(name) is not None:
            if not overwrite:
                raise ArtifactExistsError(f"artifact {name!r} already exists in {self.uri}")
            # Hide the old version first: readers never see new files under an old manifest.
            self._call("remove a manifest", self.client.remove_object, self.bucket, self._key(name, MANIFEST))
        for rel in manifest["files"]:
            self._call(
                f"upload {rel}", self.client.fput_object, self.bucket, self._key(name, rel), str(local_dir / rel)
            )
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        self._call(
            "write the manifest",
            self.client.put_object,
            self.bucket,
            self._key(name, MANIFEST),
            io.BytesIO(data),
            len(data),
            content_type="application/json",
        )
        return manifest

    def get(self, name: str) -> Path:
        manifest = self._read_manifest(name)
        if manifest is None:
            raise ArtifactNotFoundError(f"no artifact {name!r} in {self.uri}")
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
        dest = self.cache_dir / self.bucket / self._key(name) / digest
        where = self.uri_of(name)
        if (dest / MANIFEST).is_file():
            verify_dir(dest, manifest, where)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=dest.parent))
        try:
            for rel in manifest["files"]:
                self._call(
                    f"download {rel}", self.client.fget_object, self.bucket, self._key(name, rel), str(tmp / rel)
                )
            verify_dir(tmp, manifest, where)
            _write_json_atomic(tmp / MANIFEST, manifest)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest


def open_store(uri: str | Path) -> ArtifactStore:
    """A store for a local path or an `s3://bucket/prefix` URI."""
    s = str(uri)
    if s.startswith("s3://"):
        return S3Store(s)
    if "://" in s:
        raise ValueError(f"unsupported artifact store URI {s!r}: use a local path or s3://bucket/prefix")
    return LocalStore(s)


def fetch_file(uri: str, dest_dir: str | Path) -> Path:
    """A single data file from a local path or an `s3://bucket/key` object (downloaded into dest_dir)."""
    if not uri.startswith("s3://"):
        p = Path(uri).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {uri}")
        return p
    bucket, _, key = uri[len("s3://") :].partition("/")
    store = S3Store(f"s3://{bucket}")
    dest = Path(dest_dir) / Path(key).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    store._call(f"download {uri}", store.client.fget_object, bucket, key, str(dest))
    return dest
