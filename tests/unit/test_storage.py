"""Artifact store: local and S3 (moto server over HTTP, real minio client)."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from cmva.config import StorageSettings
from cmva.storage import (
    MANIFEST,
    VERSIONS,
    ArtifactExistsError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    LocalStore,
    S3Store,
    StorageError,
    StorageUnavailableError,
    open_store,
    sha256_file,
)


def _make_artifact(d, payload=b"weights"):
    (d / "sub").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(payload)
    (d / "sub" / "config.json").write_text('{"a": 1}')
    return d


def test_local_roundtrip_and_manifest(tmp_path):
    src = _make_artifact(tmp_path / "src")
    store = open_store(tmp_path / "store")
    assert isinstance(store, LocalStore)
    assert not store.exists("agents/care")
    manifest = store.publish(src, "agents/care")
    assert set(manifest["files"]) == {"model.safetensors", "sub/config.json"}
    got = store.get("agents/care")
    assert (got / "model.safetensors").read_bytes() == b"weights"
    with pytest.raises(ArtifactExistsError):
        store.publish(src, "agents/care")
    (src / "model.safetensors").write_bytes(b"new weights")
    store.publish(src, "agents/care", overwrite=True)
    assert (store.get("agents/care") / "model.safetensors").read_bytes() == b"new weights"


def test_local_half_written_is_invisible_and_corruption_detected(tmp_path):
    store = LocalStore(tmp_path / "store")
    half = tmp_path / "store" / "rewards"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"partial")  # files but no manifest: a crashed publish
    assert not store.exists("rewards")
    with pytest.raises(ArtifactNotFoundError):
        store.get("rewards")
    store.publish(_make_artifact(tmp_path / "src"), "ok")
    (tmp_path / "store" / "ok" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError, match="model.safetensors"):
        store.get("ok")


def test_bad_names_rejected(tmp_path):
    store = LocalStore(tmp_path)
    for bad in ("../x", "/abs", ".hidden", ""):
        with pytest.raises(ValueError):
            store.exists(bad)


def test_s3_roundtrip_over_http(s3_env, tmp_path):
    src = _make_artifact(tmp_path / "src", payload=b"\x00\x01" * 5000)
    uri = f"s3://cmva-{uuid.uuid4().hex[:8]}/runs/r1"
    store = open_store(uri)
    assert isinstance(store, S3Store)
    assert not store.exists("base")
    store.publish(src, "base")
    assert store.exists("base")
    assert store.uri_of("base") == f"{uri}/base"
    fresh = S3Store(uri, cache_dir=tmp_path / "cache")  # another reader, empty cache
    got = fresh.get("base")
    assert (got / "model.safetensors").read_bytes() == b"\x00\x01" * 5000
    assert json.loads((got / "sub" / "config.json").read_text()) == {"a": 1}
    with pytest.raises(ArtifactExistsError):
        store.publish(src, "base")


def test_s3_checksum_mismatch_detected(s3_env, tmp_path):
    store = S3Store(f"s3://cmva-{uuid.uuid4().hex[:8]}/p", cache_dir=tmp_path / "cache")
    store.publish(_make_artifact(tmp_path / "src"), "rm")
    # Someone overwrites one object behind the manifest's back.
    bad = tmp_path / "bad"
    bad.write_bytes(b"evil")
    store.client.fput_object(store.bucket, store._key("rm", "model.safetensors"), str(bad))
    with pytest.raises(ChecksumMismatchError, match="model.safetensors"):
        store.get("rm")
    assert not (tmp_path / "cache" / store.bucket / "p" / "rm").exists() or not any(
        (p / MANIFEST).exists() for p in (tmp_path / "cache" / store.bucket / "p" / "rm").iterdir()
    )


def test_s3_half_written_is_invisible(s3_env, tmp_path):
    store = S3Store(f"s3://cmva-{uuid.uuid4().hex[:8]}/p", cache_dir=tmp_path / "cache")
    store.publish(_make_artifact(tmp_path / "src"), "other")  # creates the bucket
    f = tmp_path / "w"
    f.write_bytes(b"partial upload")
    store.client.fput_object(store.bucket, store._key("agg", "model.safetensors"), str(f))  # no manifest yet
    assert not store.exists("agg")
    with pytest.raises(ArtifactNotFoundError):
        store.get("agg")


def test_s3_unreachable_endpoint_names_it(monkeypatch, tmp_path):
    from tests.conftest import free_port

    port = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("CMVA_S3_MAX_RETRIES", "2")
    monkeypatch.setenv("CMVA_S3_BACKOFF_S", "0.1")
    store = S3Store("s3://bucket/prefix", cache_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=f"127.0.0.1:{port}"):
        store.publish(_make_artifact(tmp_path / "src"), "x")
    assert time.monotonic() - t0 < 30  # bounded retries, no hang


def _in_threads(n: int, fn) -> list:
    """Run fn(i) for i < n in n threads released together; each result, or the exception it raised."""
    barrier = threading.Barrier(n)

    def call(i):
        barrier.wait()
        try:
            return fn(i)
        except Exception as e:  # noqa: BLE001 - returned to the test
            return e

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(call, range(n)))


def _leftovers(root) -> list:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


# --- local: atomic overwrite, exactly one winner ---------------------------------------------------------
def test_local_overwrite_never_hides_the_artifact(tmp_path):
    store = LocalStore(tmp_path / "store")
    v1, v2 = _make_artifact(tmp_path / "v1", b"one"), _make_artifact(tmp_path / "v2", b"two")
    store.publish(v1, "agents/care")
    stop, seen = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                got = store.get("agents/care")  # verifies every file of one version
                seen.append(store.exists("agents/care") and got == store.root / "agents" / "care")
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                seen.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(150):
        store.publish(v2 if i % 2 == 0 else v1, "agents/care", overwrite=True)
    stop.set()
    t.join()
    assert seen and all(x is True for x in seen), [x for x in seen if x is not True][:3]
    assert (store.root / "agents" / "care" / "model.safetensors").read_bytes() == b"one"
    assert len(list((store.root / VERSIONS / "agents" / "care").iterdir())) == 1  # old versions deleted
    assert not _leftovers(store.root)


def test_local_concurrent_publish_has_exactly_one_winner(tmp_path):
    store = LocalStore(tmp_path / "store")
    srcs = [_make_artifact(tmp_path / f"src{i}", f"writer {i}".encode()) for i in range(4)]
    results = _in_threads(4, lambda i: store.publish(srcs[i], "rewards"))
    winners = [i for i, r in enumerate(results) if isinstance(r, dict)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ArtifactExistsError) for i, r in enumerate(results) if i != winners[0]), results
    got = store.get("rewards")
    assert (got / "model.safetensors").read_bytes() == f"writer {winners[0]}".encode()
    assert len(list((store.root / VERSIONS / "rewards").iterdir())) == 1  # the losers' copies are gone
    assert not _leftovers(store.root)


def test_local_failed_write_leaves_nothing(tmp_path):
    store = LocalStore(tmp_path / "store")

    def crash(d):
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError, match="killed"):
        store.create("aggregator", crash)
    assert not store.exists("aggregator")
    assert not _leftovers(store.root) and not list((store.root / VERSIONS).rglob("*.bin"))


def test_local_replaces_a_plain_directory_of_the_older_layout(tmp_path):
    store = LocalStore(tmp_path / "store")
    old = _make_artifact(tmp_path / "store" / "base", b"old")  # as older code published it: a plain dir
    (old / MANIFEST).write_text(
        json.dumps({"files": {"model.safetensors": {"sha256": sha256_file(old / "model.safetensors")}}})
    )
    assert store.exists("base")
    store.publish(_make_artifact(tmp_path / "new", b"new"), "base", overwrite=True)
    assert (store.get("base") / "model.safetensors").read_bytes() == b"new"
    assert (store.root / "base").is_symlink()


# --- S3: hostile manifests, concurrent and corrupt caches, overwrite order ------------------------------
def _put_manifest(store, name, manifest):
    data = json.dumps(manifest).encode()
    store.client.put_object(store.bucket, store._key(name, MANIFEST), io.BytesIO(data), len(data))


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_s3_hostile_manifest_writes_nothing_outside_the_cache(s3_env, tmp_path, kind):
    outside = tmp_path / "outside" / "pwned.txt"
    cache = tmp_path / "cache"
    store = S3Store(f"s3://cmva-{uuid.uuid4().hex[:8]}/p", cache_dir=cache)
    store.publish(_make_artifact(tmp_path / "src"), "evil")  # a real artifact, then its manifest is replaced
    payload = tmp_path / "payload"
    payload.write_bytes(b"pwned")
    # the scratch dir sits at cache/<bucket>/p/evil/<scratch>: five levels up is tmp_path
    rel = str(outside) if kind == "absolute" else "../../../../../outside/pwned.txt"
    if kind == "absolute":  # an object where the old code would fetch it from, so only the check stops it
        store.client.fput_object(store.bucket, store._key("evil", rel), str(payload))
    _put_manifest(store, "evil", {"format": 1, "files": {rel: {"sha256": sha256_file(payload), "size": 5}}})
    with pytest.raises(StorageError, match=re.escape(repr(rel))):
        store.get("evil")
    assert not outside.exists() and not (tmp_path / "outside").exists()
    assert not _leftovers(cache)


def test_s3_concurrent_gets_of_one_artifact_all_succeed(s3_env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"shard-{i}.bin").write_bytes(bytes([i]) * 20000)
    uri = f"s3://cmva-{uuid.uuid4().hex[:8]}/p"
    S3Store(uri).publish(src, "agg")
    for round_ in range(3):  # several rounds: the race must not depend on luck
        cache = tmp_path / f"cache{round_}"
        results = _in_threads(4, lambda i, cache=cache: S3Store(uri, cache_dir=cache).get("agg"))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert len(set(results)) == 1
        assert (results[0] / "shard-7.bin").read_bytes() == bytes([7]) * 20000
        assert not _leftovers(cache)


def test_s3_corrupt_cache_entry_is_fetched_again_once(s3_env, tmp_path):
    store = S3Store(f"s3://cmva-{uuid.uuid4().hex[:8]}/p", cache_dir=tmp_path / "cache")
    store.publish(_make_artifact(tmp_path / "src"), "rm")
    cached = store.get("rm")
    (cached / "model.safetensors").write_bytes(b"bit rot")  # the cache, not the bucket, went bad
    fetched = []
    real = store.client.fget_object
    store.client.fget_object = lambda b, key, path, **kw: (fetched.append(key), real(b, key, path, **kw))[1]
    again = store.get("rm")
    assert again == cached and (again / "model.safetensors").read_bytes() == b"weights"
    assert sorted(fetched) == sorted(store._key("rm", rel) for rel in ("model.safetensors", "sub/config.json"))
    fetched.clear()
    store.get("rm")
    assert fetched == []  # cached and good again: no further download


def test_s3_overwrite_keeps_a_manifest_visible_and_removes_stale_objects_after(s3_env, tmp_path):
    uri = f"s3://cmva-{uuid.uuid4().hex[:8]}/p"
    store = S3Store(uri, cache_dir=tmp_path / "cache")
    old = _make_artifact(tmp_path / "old", b"old")
    (old / "stale.bin").write_bytes(b"only in the old version")
    store.publish(old, "agg")
    new = tmp_path / "new"
    new.mkdir()
    for i in range(15):
        (new / f"shard-{i}.bin").write_bytes(bytes([i]) * 4000)
    (new / "model.safetensors").write_bytes(b"new")
    calls = []
    for method in ("fput_object", "put_object", "remove_object"):
        real = getattr(store.client, method)
        setattr(store.client, method, lambda *a, _m=method, _f=real, **k: (calls.append((_m, a[1])), _f(*a, **k))[1])
    watcher, stop, seen = S3Store(uri, cache_dir=tmp_path / "cache2"), threading.Event(), []

    def poll():
        while not stop.is_set():
            seen.append(watcher.exists("agg"))

    t = threading.Thread(target=poll)
    t.start()
    store.publish(new, "agg", overwrite=True)
    stop.set()
    t.join()
    assert seen and all(seen)  # the artifact never disappeared while it was replaced
    manifest_at = calls.index(("put_object", store._key("agg", MANIFEST)))
    assert all(i < manifest_at for i, (m, _) in enumerate(calls) if m == "fput_object")
    assert calls[manifest_at + 1 :] == [
        ("remove_object", store._key("agg", "stale.bin")),
        ("remove_object", store._key("agg", "sub/config.json")),
    ]
    keys = {o.object_name for o in store.client.list_objects(store.bucket, store._key("agg") + "/", recursive=True)}
    assert keys == {
        store._key("agg", r) for r in [*(f"shard-{i}.bin" for i in range(15)), "model.safetensors", MANIFEST]
    }
    assert (S3Store(uri, cache_dir=tmp_path / "cache3").get("agg") / "model.safetensors").read_bytes() == b"new"


# --- S3: bounded failure against a stalled endpoint, secrets ------------------------------------------
@pytest.fixture
def stalled_endpoint():
    """A server that accepts every connection and never answers; yields (url, accepted connections)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns: list[socket.socket] = []

    def accept():
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", conns
    srv.close()
    for c in conns:
        c.close()


@pytest.mark.timeout(60)
def test_s3_stalled_endpoint_fails_within_the_stated_bound(monkeypatch, tmp_path, stalled_endpoint):
    url, conns = stalled_endpoint
    for k, v in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
        "CMVA_S3_MAX_RETRIES": "2",
        "CMVA_S3_BACKOFF_S": "0.1",
        "CMVA_S3_TIMEOUT_S": "1",
        "CMVA_S3_READ_TIMEOUT_S": "1.5",
    }.items():
        monkeypatch.setenv(k, v)
    store = S3Store("s3://bucket/prefix", cache_dir=tmp_path)
    bound = store.settings.request_bound_s()
    assert bound == pytest.approx(3 * 2.5 + 0.2)  # 3 attempts of connect + read timeout, backoffs 0 and 0.2 s
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=re.escape(url.removeprefix("http://"))):
        store.exists("x")
    took = time.monotonic() - t0
    assert 3 * 1.5 <= took <= bound + 1.0 and took < 15  # every attempt waited its read timeout, no longer
    assert len(conns) == 3  # 1 attempt + 2 retries, then it gave up


def test_default_retry_bound_is_stated_and_matches_urllib3(monkeypatch):
    import urllib3

    for k in ("CMVA_S3_MAX_RETRIES", "CMVA_S3_BACKOFF_S", "CMVA_S3_TIMEOUT_S", "CMVA_S3_READ_TIMEOUT_S"):
        monkeypatch.delenv(k, raising=False)
    s = StorageSettings()
    retry, sleeps = urllib3.Retry(total=s.max_retries, backoff_factor=s.backoff_s, backoff_max=s.backoff_max_s), []
    for _ in range(s.max_retries):  # the sleeps urllib3 itself takes between attempts
        retry = retry.increment("GET", "/", error=urllib3.exceptions.ConnectTimeoutError())
        sleeps.append(retry.get_backoff_time())
    assert s.backoffs_s() == sleeps == [0.0, 1.0, 2.0]
    assert s.request_bound_s() == pytest.approx(4 * (5 + 20) + 3)  # about 100 s, not ~5 minutes per call


def test_credentials_are_secret(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-visible-nowhere")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-visible-nowhere")
    s = StorageSettings()
    for text in (repr(s), str(s), str(s.model_dump()), json.dumps(s.model_dump(mode="json"))):
        assert "visible-nowhere" not in text
    assert s.secret_key.get_secret_value() == "s3cr3t-visible-nowhere"
