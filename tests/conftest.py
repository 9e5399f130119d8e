"""Shared fixtures: a tiny random base model (real SmolLM2 tokenizer), a moto S3 server on loopback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Nothing may be fetched from a hub at test time: fail loudly instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint with the real SmolLM2 tokenizer, built once per session."""
    from cmva.models import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`cmva run --profile smoke` once per session: (run dir, result, wall seconds)."""
    import time

    from cmva.config import load_profile
    from cmva.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("smoke")
    t0 = time.time()
    result = run_pipeline(load_profile("smoke"), out)
    return out, result, time.time() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a loopback port, reached over real HTTP by the real minio client."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment a KServe S3 Secret would give a pod, pointing at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("CMVA_S3_MAX_RETRIES", "1")
    monkeypatch.setenv("CMVA_S3_BACKOFF_S", "0.05")
    return s3_server


@pytest.fixture
def native_bf16():
    """Skips the test where cmva refuses bfloat16 generation by design (a CPU without native bf16 matmuls), with
    cmva's own message: the check is cmva.models.generation_dtype's (the CI machines are not all the same CPU)."""
    from cmva.models import generation_dtype

    try:
        generation_dtype("bfloat16")
    except ValueError as e:
        pytest.skip(str(e))
