"""Artifact store: a local directory (the embedded default) or S3/MinIO for `s3://bucket/prefix` URIs.

An artifact is a named directory of files plus `_manifest.json` listing each file's sha256 and size.
Publishing is atomic for readers: files go up first, the manifest last, and an artifact without a
manifest does not exist. Readers verify every file against the manifest; so do the model servers
(`open_serving`), which refuse to start on a missing manifest or a changed file.

Example:
    >>> store = open_store("runs/demo")                      # or "s3://cmva/runs/demo"
    >>> store.publish(Path("out/rewards"), "rewards")        # doctest: +SKIP
    >>> local_dir = store.get("rewards")                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from cmva.atomic import atomic_dir, remove_tree, swap_symlink, write_text_atomic

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
VERSIONS = ".versions"  # LocalStore: where the versions its links point at live
SERVED = ("base", "rewards", "aggregator")  # served artifacts besides agents/<value>


class StorageError(RuntimeError):
    """Base class of artifact store errors."""


class ArtifactNotFoundError(StorageError):
    """No complete (manifested) artifact under that name."""


class ArtifactExistsError(StorageError):
    """Publishing would replace an artifact and `overwrite` was not given."""


class ChecksumMismatchError(StorageError):
    """A file does not match the manifest: the artifact is corrupt or was tampered with."""


class InvalidManifestError(StorageError):
    """A manifest that is not JSON of the expected shape, or names a path outside its artifact."""


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
        raise StorageError(f"cannot publish {name!r}: it holds no files")
    return {"format": 1, "name": name, "created": time.time(), "files": files}


def _check_rel(rel: object, where: str) -> str:
    """A manifest's file path, refused unless it is relative and stays inside the artifact."""
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if not parts or rel.startswith("/") or "\\" in rel or any(p in ("..", ".") for p in parts) or rel == MANIFEST:
        raise InvalidManifestError(f"{where}: manifest lists the path {rel!r}, which is not inside the artifact")
    return rel


def check_manifest(manifest: object, where: str) -> dict:
    """`manifest` if it has the expected shape and only safe relative paths, else InvalidManifestError."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise InvalidManifestError(f"{where}: {MANIFEST} has no 'files' mapping")
    for rel, meta in files.items():
        _check_rel(rel, where)
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            raise InvalidManifestError(f"{where}: {MANIFEST} entry {rel!r} has no sha256")
    return manifest


def parse_manifest(data: bytes | str, where: str) -> dict:
    """A manifest read from bytes, checked by `check_manifest`."""
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise InvalidManifestError(f"{where}: {MANIFEST} is not valid JSON ({e})") from None
    return check_manifest(obj, where)


def verify_dir(local_dir: Path, manifest: dict, where: str) -> None:
    """Check every file of the manifest exists in `local_dir` with the right sha256.

    Raises:
        ChecksumMismatchError: Naming the first bad file.
    """
    for rel, meta in check_manifest(manifest, where)["files"].items():
        try:
            digest = sha256_file(local_dir / rel)
        except (FileNotFoundError, IsADirectoryError):
            raise ChecksumMismatchError(f"{where}: file {rel!r} listed in the manifest is missing") from None
        if digest != meta["sha256"]:
            raise ChecksumMismatchError(
                f"{where}: sha256 of {rel!r} is {digest[:12]}…, manifest says {meta['sha256'][:12]}…"
            )


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True)


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
    """Artifacts as directories under `root`, each replaced atomically.

    `<root>/<name>` is a relative symlink to `<root>/.versions/<name>/<id>/`, a complete copy with its
    manifest, written through `atomic_dir`. Publishing then makes the link: `os.symlink` fails when the
    link exists, so of two concurrent publishers exactly one wins; with `overwrite` the link is swapped in
    one rename (readers see the old version or the new one, never neither) and the old version deleted.
    A plain directory at `<name>` (half-written, or published by older code) is moved aside first.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def uri_of(self, name: str) -> str:
        return str(self.root / _check_name(name))

    def exists(self, name: str) -> bool:
        return (self.root / _check_name(name) / MANIFEST).is_file()

    def publish(self, local_dir: Path, name: str, overwrite: bool = False) -> dict:
        """Copy `local_dir` in as artifact `name`; its manifest."""
        local_dir = Path(local_dir).resolve()
        if not local_dir.is_dir():
            raise StorageError(f"cannot publish {local_dir}: not a directory")
        ignore = shutil.ignore_patterns(MANIFEST)
        return self.create(name, lambda d: shutil.copytree(local_dir, d, ignore=ignore, dirs_exist_ok=True), overwrite)

    def create(self, name: str, write: Callable[[Path], object], overwrite: bool = False) -> dict:
        """Publish what `write(dir)` writes into an empty directory as artifact `name`; its manifest."""
        name = _check_name(name)
        if not overwrite and self.exists(name):
            raise ArtifactExistsError(f"artifact {name!r} already exists in {self.uri}")
        version = self.root / VERSIONS / name / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        with atomic_dir(version) as tmp:
            write(tmp)
            manifest = build_manifest(tmp, name)
            write_text_atomic(tmp / MANIFEST, _manifest_text(manifest))
        try:
            self._link(name, version, overwrite)
        except BaseException:
            remove_tree(version)
            raise
        return manifest

    def _link(self, name: str, version: Path, overwrite: bool) -> None:
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(version, dest.parent)
        if dest.is_symlink() and not dest.exists():
            remove_tree(dest)  # a dangling link: nothing visible to replace
        elif os.path.lexists(dest) and not dest.is_symlink():
            remove_tree(dest)  # a plain directory: half-written, or the older layout (no atomic swap there)
        if not overwrite:
            try:
                os.symlink(target, dest)
            except FileExistsError:
                raise ArtifactExistsError(f"artifact {name!r} already exists in {self.uri}") from None
            return
        old = self._version_of(dest)
        swap_symlink(dest, target)
        if old is not None:
            remove_tree(old)

    def _version_of(self, dest: Path) -> Path | None:
        """The version directory link `dest` points at, if it is one of ours."""
        if not dest.is_symlink():
            return None
        p = Path(os.path.normpath(dest.parent / os.readlink(dest)))
        return p if (self.root / VERSIONS) in p.parents else None

    def get(self, name: str) -> Path:
        """`<root>/<name>`, once the version it points at has matched its manifest.

        A version replaced (and deleted) while it is being verified is not an error: the new one is verified, for as
        long as publishers keep overtaking the check (20 versions; then the failure is raised).
        """
        name = _check_name(name)
        link = self.root / name
        d = link.resolve()  # one version per attempt, even if the link is swapped meanwhile
        for _ in range(19):
            try:
                self._verify(d, name)
                return link
            except StorageError:
                current = link.resolve()
                if current == d:
                    raise
                d = current
        self._verify(d, name)
        return link

    def _verify(self, d: Path, name: str) -> None:
        where = f"{self.uri}/{name}"
        try:
            data = (d / MANIFEST).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFoundError(f"no artifact {name!r} in {self.uri}: {where}/{MANIFEST} is missing") from None
        verify_dir(d, parse_manifest(data, where), where)


def _inside(root: Path, rel: str) -> Path:
    """`root / rel`, refused (InvalidManifestError) unless it resolves to a path under `root`."""
    p = (root / rel).resolve()
    if root.resolve() not in p.parents:
        raise InvalidManifestError(f"manifest path {rel!r} resolves outside {root}")
    return p


def _http_client(s):
    """urllib3 pool whose timeouts and retries end every request within `s.request_bound_s()`."""
    import urllib3

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=s.timeout_s, read=s.read_timeout_s),
        retries=urllib3.Retry(
            total=s.max_retries,
            backoff_factor=s.backoff_s,
            backoff_max=s.backoff_max_s,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,  # retry PUT too: our object writes are idempotent
            respect_retry_after_header=False,  # a server's Retry-After must not stretch the bound
        ),
        cert_reqs="CERT_REQUIRED" if s.verify_ssl else "CERT_NONE",
    )


class S3Store:
    """Artifacts under `s3://bucket/prefix/<name>/` through the `minio` client.

    Reads go through a local cache directory (verified against the manifest, keyed by its sha256),
    so a model server or a pipeline step downloads each artifact once.
    """

    def __init__(self, uri: str, settings=None, cache_dir: str | Path | None = None):
        from minio import Minio

        from cmva.config import StorageSettings

        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"s3 URI without a bucket: {uri!r}")
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.settings = s = settings or StorageSettings()
        host, tls = s.host_and_tls()
        self.endpoint = f"{'https' if tls else 'http'}://{host}"
        self.client = Minio(
            host,
            access_key=s.access_key.get_secret_value() if s.access_key else None,
            secret_key=s.secret_key.get_secret_value() if s.secret_key else None,
            secure=tls,
            region=s.region,
            http_client=_http_client(s),
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
        except (urllib3.exceptions.HTTPError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            s = self.settings
            raise StorageUnavailableError(
                f"S3 endpoint {self.endpoint} unreachable while trying to {what} (gave up after "
                f"{s.max_retries + 1} attempts, bound {s.request_bound_s():.0f} s per request): {reason}"
            ) from e

    def _read_manifest(self, name: str) -> dict | None:
        from minio.error import S3Error

        def fetch() -> bytes:
            resp = self.client.get_object(self.bucket, self._key(name, MANIFEST))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        try:
            data = self._call("read a manifest", fetch)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        return parse_manifest(data, self.uri_of(name))

    def exists(self, name: str) -> bool:
        return self._read_manifest(name) is not None

    def publish(self, local_dir: Path, name: str, overwrite: bool = False) -> dict:
        """Upload the files, then the manifest (the new version is visible from then on), then delete
        the objects the new manifest does not list. The old manifest stays until the new one replaces
        it, so the artifact never disappears; a reader that fetches a file being replaced in that window
        gets ChecksumMismatchError (never mixed content) and can retry."""
        local_dir = Path(local_dir)
        manifest = build_manifest(local_dir, name)
        if not self._call("check the bucket", self.client.bucket_exists, self.bucket):
            self._call("create the bucket", self.client.make_bucket, self.bucket)
        if not overwrite and self._read_manifest(name) is not None:
            raise ArtifactExistsError(f"artifact {name!r} already exists in {self.uri}")
        for rel in manifest["files"]:
            key = self._key(name, rel)
            self._call(f"upload {rel}", self.client.fput_object, self.bucket, key, str(local_dir / rel))
        self._put_manifest(name, manifest)
        self._remove_stale(name, manifest)
        return manifest

    def _put_manifest(self, name: str, manifest: dict) -> None:
        data = _manifest_text(manifest).encode()
        key = self._key(name, MANIFEST)
        put = self.client.put_object
        self._call("write the manifest", put, self.bucket, key, io.BytesIO(data), len(data), "application/json")

    def _list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (recursive)."""

        def listing() -> list[str]:
            return [o.object_name for o in self.client.list_objects(self.bucket, prefix, recursive=True)]

        return self._call(f"list s3://{self.bucket}/{prefix}", listing)

    def _remove_stale(self, name: str, manifest: dict) -> None:
        """Delete the objects of `name` that `manifest` does not list (left by an older version)."""
        base = self._key(name) + "/"
        keep = set(manifest["files"]) | {MANIFEST}
        for key in self._list(base):
            if key[len(base) :] not in keep:
                self._call(f"remove {key}", self.client.remove_object, self.bucket, key)

    def get(self, name: str) -> Path:
        """Verified local copy of artifact `name`, cached under the manifest's digest.

        Concurrent calls share one copy; a cached copy that no longer matches is fetched again.
        """
        where = self.uri_of(name)
        manifest = self._read_manifest(name)
        if manifest is None:
            raise ArtifactNotFoundError(f"no artifact {name!r} in {self.uri}: {where}/{MANIFEST} is missing")
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
        dest = self.cache_dir / self.bucket / self._key(name) / digest
        if not _cached_ok(dest, manifest, where):
            self._download(name, manifest, dest)
        return dest

    def _download(self, name: str, manifest: dict, dest: Path) -> None:
        """Fetch every file into a scratch dir, verify, then rename it to `dest` (kept if one got there first)."""
        with atomic_dir(dest, exist="keep") as tmp:
            for rel in manifest["files"]:
                target = str(_inside(tmp, rel))
                self._call(f"download {rel}", self.client.fget_object, self.bucket, self._key(name, rel), target)
            verify_dir(tmp, manifest, self.uri_of(name))
            write_text_atomic(tmp / MANIFEST, _manifest_text(manifest))

    def get_serving(self) -> Path:
        """The served artifacts under this prefix, each fetched and verified, as one local tree of links."""
        from minio.error import S3Error

        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            rels = [k[len(prefix) :] for k in self._list(prefix)]
        except S3Error as e:
            raise ArtifactNotFoundError(f"cannot list {self.uri}: {e.code}") from e
        paths = {n: self.get(n) for n in serving_names(rels, self.uri)}
        key = hashlib.sha256(json.dumps({n: str(p) for n, p in paths.items()}).encode()).hexdigest()[:16]
        view = self.cache_dir / self.bucket / self.prefix / ".serving" / key
        with atomic_dir(view, exist="keep") as tmp:
            for n, p in paths.items():
                (tmp / n).parent.mkdir(parents=True, exist_ok=True)
                (tmp / n).symlink_to(p, target_is_directory=True)
        return view


def _cached_ok(dest: Path, manifest: dict, where: str) -> bool:
    """Whether `dest` holds a verified copy; a corrupt one is removed (so it is fetched again)."""
    if not os.path.lexists(dest):
        return False
    try:
        verify_dir(dest, manifest, f"{where} (cached in {dest})")
        return True
    except ChecksumMismatchError as e:
        log.warning("%s; fetching it again", e)
        remove_tree(dest)
        return False


def serving_names(rels: Iterable[str], where: str) -> list[str]:
    """The served artifacts (`SERVED`, `agents/<value>`) a tree holds, from its files' relative paths."""
    names = set()
    for rel in rels:
        parts = rel.split("/")
        if parts[0] in SERVED and len(parts) > 1:
            names.add(parts[0])
        elif parts[0] == "agents" and len(parts) > 2 and not parts[1].startswith("."):
            names.add("/".join(parts[:2]))
    if "base" not in names:
        raise ArtifactNotFoundError(f"no serving artifacts in {where}: base/{MANIFEST} is missing")
    return sorted(names)


def _local_rels(root: Path) -> Iterator[str]:
    """One relative path per entry of the served directories (enough for `serving_names`)."""
    for n in SERVED:
        if (root / n).is_dir():
            yield f"{n}/{MANIFEST}"
    if (root / "agents").is_dir():
        yield from (f"agents/{d.name}/{MANIFEST}" for d in (root / "agents").iterdir() if d.is_dir())


def open_serving(uri: str | Path) -> Path:
    """Local root of the served artifacts of `uri`, every one verified against its `_manifest.json`.

    `uri`: a run directory, a published serving version, KServe's `/mnt/models`, or an `s3://` prefix.

    Raises:
        ArtifactNotFoundError: Naming a missing `_manifest.json` (or a missing root).
        ChecksumMismatchError: Naming a file that is missing or whose sha256 differs.
    """
    s = str(uri)
    if s.startswith("s3://"):
        return S3Store(s).get_serving()
    root = Path(s)
    if not root.is_dir():
        raise ArtifactNotFoundError(f"artifacts not found: {s}")
    store = LocalStore(root)
    for name in serving_names(_local_rels(root), s):
        store.get(name)
    return root


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
