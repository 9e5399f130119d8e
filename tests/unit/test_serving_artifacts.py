"""Model servers verify what they serve: a local run, KServe's /mnt/models and an s3:// prefix alike.

The artifacts are small stand-ins (verification runs before any weight is loaded); S3 is moto's server
over real HTTP with the real minio client.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cmva.serving.predictors import SharedBackend, resolve_artifacts
from cmva.storage import MANIFEST, ArtifactNotFoundError, ChecksumMismatchError, LocalStore, S3Store

ARTIFACTS = {
    "base": {"model.safetensors": b"base weights", "tokenizer.json": b"{}"},
    "rewards": {"heads.safetensors": b"heads", "second/heads.safetensors": b"second heads"},
    "agents/care": {"adapter_model.safetensors": b"care adapter", "adapter_config.json": b"{}"},
    "agents/fairness": {"adapter_model.safetensors": b"fairness adapter", "adapter_config.json": b"{}"},
    "aggregator": {"adapter_model.safetensors": b"aggregator adapter", "adapter_config.json": b"{}"},
}


def _publish_all(store, tmp_path: Path) -> None:
    for name, files in ARTIFACTS.items():
        src = tmp_path / "src" / name
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        store.publish(src, name)


def _tamper(path: Path) -> None:
    """Overwrite four bytes in place, as in the issue's report."""
    data = bytearray(path.read_bytes())
    data[:4] = b"\xde\xad\xbe\xef"
    path.write_bytes(bytes(data))


@pytest.fixture
def local_root(tmp_path) -> Path:
    _publish_all(LocalStore(tmp_path / "serving" / "v1"), tmp_path)
    return tmp_path / "serving" / "v1"


@pytest.fixture
def s3_uri(s3_env, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("CMVA_CACHE", str(tmp_path / "cache"))
    uri = f"s3://cmva-{uuid.uuid4().hex[:8]}/serving/v1"
    _publish_all(S3Store(uri), tmp_path)
    return uri


def _download_like_kserve(uri: str, dest: Path) -> Path:
    """What KServe's storage initializer does for a storageUri: copy every object under it to /mnt/models."""
    store = S3Store(uri)
    for obj in store.client.list_objects(store.bucket, store.prefix + "/", recursive=True):
        store.client.fget_object(store.bucket, obj.object_name, str(dest / obj.object_name[len(store.prefix) + 1 :]))
    return dest


def _start(uri: str, adapters: list[str]) -> None:
    """What a predictor does on start: load its backend's weights (the artifacts are verified first)."""
    backend = SharedBackend(uri, adapters)
    try:
        backend.load()
    finally:
        assert backend.engine is None  # refused before any weight was loaded


def _assert_intact(root: Path) -> None:
    for name, files in ARTIFACTS.items():
        for rel, data in files.items():
            assert (root / name / rel).read_bytes() == data


# --- a verified tree is served ------------------------------------------------------------------------
def test_local_run_is_served_after_verification(local_root):
    assert resolve_artifacts(str(local_root)) == local_root
    _assert_intact(local_root)


def test_s3_prefix_is_fetched_verified_and_served(s3_uri):
    root = resolve_artifacts(s3_uri)
    _assert_intact(root)
    assert resolve_artifacts(s3_uri) == root  # a restart reuses the verified cache


def test_mnt_models_is_served_after_verification(s3_uri, tmp_path):
    mnt = _download_like_kserve(s3_uri, tmp_path / "mnt" / "models")
    assert resolve_artifacts(str(mnt)) == mnt
    _assert_intact(mnt)


# --- a changed file stops the predictor, naming the file ---------------------------------------------
def test_local_changed_adapter_stops_the_predictor(local_root):
    _tamper(local_root / "agents" / "care" / "adapter_model.safetensors")
    with pytest.raises(ChecksumMismatchError, match=r"agents/care.*adapter_model\.safetensors"):
        _start(str(local_root), ["care"])


def test_s3_changed_object_stops_the_predictor(s3_uri, tmp_path):
    store = S3Store(s3_uri)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\xde\xad\xbe\xef" + ARTIFACTS["base"]["model.safetensors"][4:])
    store.client.fput_object(store.bucket, store._key("base", "model.safetensors"), str(bad))
    with pytest.raises(ChecksumMismatchError, match=r"base.*model\.safetensors"):
        _start(s3_uri, ["aggregator"])


def test_mnt_models_changed_file_stops_the_predictor(s3_uri, tmp_path):
    mnt = _download_like_kserve(s3_uri, tmp_path / "mnt" / "models")
    _tamper(mnt / "rewards" / "second" / "heads.safetensors")
    with pytest.raises(ChecksumMismatchError, match=r"rewards.*second/heads\.safetensors"):
        resolve_artifacts(str(mnt))


# --- a missing manifest stops the predictor, naming it -----------------------------------------------
def test_local_missing_manifest_stops_the_predictor(local_root):
    (local_root / "aggregator" / MANIFEST).unlink()
    with pytest.raises(ArtifactNotFoundError, match=f"aggregator/{MANIFEST}"):
        _start(str(local_root), ["aggregator"])


def test_s3_missing_manifest_stops_the_predictor(s3_uri):
    store = S3Store(s3_uri)
    store.client.remove_object(store.bucket, store._key("agents/fairness", MANIFEST))
    with pytest.raises(ArtifactNotFoundError, match=f"agents/fairness/{MANIFEST}"):
        resolve_artifacts(s3_uri)


def test_mnt_models_missing_manifest_stops_the_predictor(s3_uri, tmp_path):
    mnt = _download_like_kserve(s3_uri, tmp_path / "mnt" / "models")
    (mnt / "base" / MANIFEST).unlink()
    with pytest.raises(ArtifactNotFoundError, match=f"base/{MANIFEST}"):
        resolve_artifacts(str(mnt))


def test_tree_without_any_manifest_is_refused(tmp_path):
    plain = tmp_path / "plain"
    for name, files in ARTIFACTS.items():  # right files, never published
        for rel, data in files.items():
            (plain / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (plain / name / rel).write_bytes(data)
    with pytest.raises(ArtifactNotFoundError, match=MANIFEST):
        resolve_artifacts(str(plain))
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        resolve_artifacts(str(tmp_path / "nowhere"))
