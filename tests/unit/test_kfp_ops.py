"""KFP component bodies (cmva.kfp_ops): data files named by s3:// URIs reach the stage and are gone afterwards."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

from cmva import kfp_ops, stages
from cmva.data import SAMPLE_MIC
from cmva.storage import S3Store


def test_a_stage_reads_s3_data_and_the_download_is_removed_afterwards(s3_env, tmp_path, monkeypatch):
    bucket = f"data-{uuid.uuid4().hex[:8]}"
    store = S3Store(f"s3://{bucket}/x")
    store.client.make_bucket(bucket)
    store.client.fput_object(bucket, "mic/MIC.csv", str(SAMPLE_MIC))
    seen = {}

    def run(out, call):
        seen["mic"] = call.data["mic"]
        seen["bytes"] = call.data["mic"].read_bytes()

    fake = SimpleNamespace(data=("mic",), run=run, summary=None)
    monkeypatch.setattr(stages, "stage", lambda name: fake)
    scratch = tmp_path / "tmp"  # the downloads' parent, to see what stays
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    kfp_ops.run_stage("x", str(tmp_path / "out"), {}, "smoke", {}, [], mic_uri=f"s3://{bucket}/mic/MIC.csv")
    assert isinstance(seen["mic"], Path) and seen["mic"].name == "MIC.csv"
    assert seen["bytes"] == SAMPLE_MIC.read_bytes()
    assert not seen["mic"].exists() and list(scratch.iterdir()) == []  # no cmva-data-* directory left behind
