"""Training → serving handoff on this machine, as on a cluster: the smoke pipeline under kfp.local (evaluate →
quality gate → publish to S3 → promote to `staging`), `cmva promote` of that run to `prod`, then `cmva serve
--artifacts s3://…/channels/prod` answers over HTTP and reports the run id in its V2 model metadata.

S3 is moto's server on loopback, reached over real HTTP by the real minio client (pipeline tasks and model
servers inherit the endpoint and keys from the environment, as pods get them from the Secret)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from cmva.channels import channel_uri, read_release, run_uri
from cmva.cli import app
from cmva.kfp_runner import run_local
from cmva.serving.launcher import free_port_block


def _wait_ready(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Until `cmva serve` says the whole chain is ready (it prints that once every server answers ready)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"cmva serve exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        if "ready: POST" in log.read_text():
            return
        time.sleep(1)
    raise TimeoutError(f"cmva serve not ready after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def test_pipeline_gate_promote_then_serve_the_channel_from_s3(tmp_path, s3_env, monkeypatch):
    monkeypatch.setenv("CMVA_CACHE", str(tmp_path / "s3-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = "s3://cmva-handoff/serving"

    report = run_local(tmp_path / "kfp", "smoke", store_uri=store, channel="staging")

    run_dir = report.parents[1]
    gate = json.loads((run_dir / "quality-gate" / "executor_output.json").read_text())
    verdict = gate["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert gate["parameterValues"]["Output"] == "pass" and verdict["gate_passed"] == 1.0
    assert verdict["gate_enforced"] == 0.0  # smoke: reported, not enforced (tiny random models)
    assert (run_dir / "quality-gate" / "verdict").read_text().startswith("# Quality gate")
    published = json.loads(next(run_dir.rglob("publish-for-serving/executor_output.json")).read_text())
    run_id = published["parameterValues"]["run_id"]
    assert published["parameterValues"]["uri"] == run_uri(store, run_id)
    assert read_release(run_uri(store, run_id))["run_id"] == run_id
    staging = read_release(channel_uri(store, "staging"))
    assert staging["run_id"] == run_id and staging["state"] == "ready"  # the pipeline's promote step

    r = CliRunner().invoke(app, ["promote", "--store", store, "--run-id", run_id, "--channel", "prod"])
    assert r.exit_code == 0, r.output
    prod = channel_uri(store, "prod")
    assert prod == "s3://cmva-handoff/serving/channels/prod"

    port = free_port_block(3)
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "cmva.cli", "serve", "--artifacts", prod, "--topology", "packed", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, log)
        meta = httpx.get(f"{url}/v2/models/cmva", timeout=30).json()  # the transformer: what the chain serves
        assert meta["name"] == "cmva" and meta["versions"] == [run_id]
        for model in ("cmva", "agents"):  # the packed predictor itself
            assert httpx.get(f"http://127.0.0.1:{port + 1}/v2/models/{model}", timeout=10).json()["versions"] == [
                run_id
            ]
        body = {
            "instances": [{"question": "Should I return a lost wallet?", "profile": {"care": 1.0, "fairness": 0.5}}]
        }
        answer = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=600)
        assert answer.status_code == 200, answer.text
        pred = answer.json()["predictions"][0]
        assert isinstance(pred["answer"], str) and set(pred["agents"]) == {"care", "fairness"}
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: cmva serve stops its servers
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
