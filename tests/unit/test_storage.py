"""Artifact store: local and S3 (moto server over HTTP, real minio client)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from cmva.storage import (
    MANIFEST,
    ArtifactExistsError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    LocalStore,
    S3Store,
    StorageUnavailableError,
    open_store,
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
