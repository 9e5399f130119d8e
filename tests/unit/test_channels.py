"""Serving channels: promotion copies exactly one run, rollback, refusal of a half-promoted or mixed channel;
on a local store and on S3 (moto over HTTP, the real minio client), and through `cmva promote`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmva.channels import (
    RELEASE,
    ChannelError,
    channel_uri,
    promote,
    read_release,
    record_run,
    run_uri,
    served_run,
)
from cmva.storage import ArtifactNotFoundError, LocalStore, open_serving, open_store


def _publish_run(store_uri: str, run_id: str, tmp: Path, agents=("care", "fairness"), base="same base") -> None:
    """What publish_op leaves: the served artifacts of one run under <store>/<run id>/ and its release record."""
    store = open_store(run_uri(store_uri, run_id))
    contents = {"base": base, "rewards": f"rewards {run_id}", "aggregator": f"aggregator {run_id}"}
    contents.update({f"agents/{v}": f"{v} adapter {run_id}" for v in agents})
    manifests = {}
    for name, text in contents.items():
        d = tmp / run_id / name
        d.mkdir(parents=True)
        (d / "weights.bin").write_text(text)
        manifests[name] = store.publish(d, name)
    record_run(store_uri, run_id, manifests)


def _served(uri: str) -> tuple[str | None, Path]:
    root = open_serving(uri)
    return served_run(uri, root), root


def _agents(root: Path) -> list[str]:
    return sorted(d.name for d in (root / "agents").iterdir())


def test_promote_rollback_local(tmp_path):
    store = str(tmp_path / "serving")
    _publish_run(store, "run-a", tmp_path)
    _publish_run(store, "run-b", tmp_path, agents=("care",))
    prod = channel_uri(store, "prod")
    assert prod == f"{store}/channels/prod"
    assert served_run(run_uri(store, "run-a"), open_serving(run_uri(store, "run-a"))) == "run-a"  # a run prefix too

    rec = promote(store, "run-a", "prod")
    assert rec["state"] == "ready" and rec["previous_run_id"] is None
    run_id, root = _served(prod)
    assert run_id == "run-a" and _agents(root) == ["care", "fairness"]
    assert (root / "aggregator" / "weights.bin").read_text() == "aggregator run-a"
    base_version = (Path(prod) / "base").resolve()

    rec = promote(store, "run-b", "prod")
    assert rec["previous_run_id"] == "run-a"
    run_id, root = _served(prod)
    assert run_id == "run-b" and _agents(root) == ["care"]  # run-a's fairness agent is gone
    assert (root / "agents" / "care" / "weights.bin").read_text() == "care adapter run-b"
    assert (Path(prod) / "base").resolve() == base_version  # unchanged content is not copied again
    assert not list((Path(prod) / ".versions" / "agents").glob("fairness/*"))  # nor left behind

    promote(store, "run-a", "prod")  # rollback
    run_id, root = _served(prod)
    assert run_id == "run-a" and _agents(root) == ["care", "fairness"]
    assert (root / "aggregator" / "weights.bin").read_text() == "aggregator run-a"

    promote(store, "run-b", "staging")  # channels are independent
    assert _served(channel_uri(store, "staging"))[0] == "run-b" and _served(prod)[0] == "run-a"


def test_interrupted_promotion_is_refused_until_promoted_again(tmp_path, monkeypatch):
    store = str(tmp_path / "serving")
    _publish_run(store, "run-a", tmp_path)
    _publish_run(store, "run-b", tmp_path, base="new base")
    promote(store, "run-a", "prod")
    prod = channel_uri(store, "prod")

    real_publish = LocalStore.publish

    def dies_on_aggregator(self, local_dir, name, overwrite=False):
        if name == "aggregator":
            raise OSError("killed mid-promotion")
        return real_publish(self, local_dir, name, overwrite)

    monkeypatch.setattr(LocalStore, "publish", dies_on_aggregator)
    with pytest.raises(OSError):
        promote(store, "run-b", "prod")
    monkeypatch.setattr(LocalStore, "publish", real_publish)
    assert read_release(prod)["state"] == "promoting"
    with pytest.raises(ChannelError, match="being promoted to run run-b"):
        _served(prod)  # base is run-b's, aggregator still run-a's: never served

    promote(store, "run-b", "prod")
    assert _served(prod)[0] == "run-b"


def test_mixed_channel_is_refused(tmp_path):
    store = str(tmp_path / "serving")
    _publish_run(store, "run-a", tmp_path)
    _publish_run(store, "run-b", tmp_path)
    promote(store, "run-a", "prod")
    prod = channel_uri(store, "prod")
    src = open_serving(run_uri(store, "run-b"))
    open_store(prod).publish(src / "aggregator", "aggregator", overwrite=True)  # someone copies one artifact by hand
    with pytest.raises(ChannelError, match="aggregator is not run run-a's"):
        _served(prod)
    open_store(prod).publish(src / "agents" / "care", "agents/liberty")  # an extra agent
    with pytest.raises(ChannelError, match="differ from run run-a's"):
        _served(prod)


def test_unknown_run_and_bad_names(tmp_path):
    store = str(tmp_path / "serving")
    with pytest.raises(ArtifactNotFoundError):
        promote(store, "never-published", "prod")
    for bad in ("Prod", "a/b", "../x", ""):
        with pytest.raises(ValueError, match="invalid channel"):
            channel_uri(store, bad)
    with pytest.raises(ValueError, match="invalid run id"):
        run_uri(store, "../etc")
    assert read_release(str(tmp_path / "nothing")) is None


def test_promote_on_s3(tmp_path, s3_env, monkeypatch):
    monkeypatch.setenv("CMVA_CACHE", str(tmp_path / "cache"))
    store = "s3://cmva-channels/serving"
    _publish_run(store, "run-a", tmp_path)
    _publish_run(store, "run-b", tmp_path, agents=("care",))
    prod = channel_uri(store, "prod")
    assert prod == "s3://cmva-channels/serving/channels/prod"

    promote(store, "run-a", "prod")
    run_id, root = _served(prod)
    assert run_id == "run-a" and _agents(root) == ["care", "fairness"]
    promote(store, "run-b", "prod")
    run_id, root = _served(prod)
    assert run_id == "run-b" and _agents(root) == ["care"]
    keys = [o.object_name for o in open_store(prod).client.list_objects("cmva-channels", "serving/", recursive=True)]
    assert not [k for k in keys if k.startswith("serving/channels/prod/agents/fairness/")]  # removed from the bucket
    assert f"serving/channels/prod/{RELEASE}/release.json" in keys
    promote(store, "run-a", "prod")  # rollback
    assert _served(prod)[0] == "run-a"


def test_cli_promote(tmp_path):
    from cmva.cli import app

    store = str(tmp_path / "serving")
    _publish_run(store, "run-a", tmp_path)
    _publish_run(store, "run-b", tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["promote", "--store", store, "--run-id", "run-a", "--channel", "prod"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["promote", "--store", store, "--run-id", "run-b", "--channel", "prod"])
    assert r.exit_code == 0 and "serves run run-b" in r.output and "previous run: run-a" in r.output
    assert json.loads((Path(store) / "channels" / "prod" / RELEASE / "release.json").read_text())["run_id"] == "run-b"
    r = runner.invoke(app, ["promote", "--store", store, "--run-id", "run-zzz", "--channel", "prod"])
    assert r.exit_code == 2 and "error:" in r.output


def test_predictor_reports_the_served_run_and_refuses_a_half_promoted_channel(tmp_path, monkeypatch):
    """SharedBackend (what every predictor loads) takes the run id from the channel's record (V2 `versions`)."""
    import asyncio
    from types import SimpleNamespace

    import cmva.engine
    import cmva.rewards
    import cmva.serving.batcher
    from cmva.channels import write_release
    from cmva.serving.predictors import SharedBackend
    from cmva.serving.release import backend_versions

    monkeypatch.setattr(cmva.engine, "Engine", lambda base, adapters, **kw: SimpleNamespace(dtype="float32"))
    monkeypatch.setattr(cmva.rewards.RewardModel, "load", classmethod(lambda cls, path: "rewards"))
    monkeypatch.setattr(cmva.serving.batcher, "MicroBatcher", lambda engine, **kw: "batcher")
    store = str(tmp_path / "serving")
    _publish_run(store, "run-a", tmp_path)
    for agent in ("care", "fairness"):  # what the backend checks before loading an adapter
        d = tmp_path / "adapters" / agent
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_text(agent)
        open_store(run_uri(store, "run-a")).publish(d, f"agents/{agent}", overwrite=True)
    manifests = {
        n: json.loads((Path(run_uri(store, "run-a")) / n / "_manifest.json").read_text())
        for n in ("base", "rewards", "aggregator", "agents/care", "agents/fairness")
    }
    record_run(store, "run-a", manifests)
    promote(store, "run-a", "prod")

    backend = SharedBackend(channel_uri(store, "prod"), ["care", "fairness"])
    backend.load()
    assert backend.run_id == "run-a" and asyncio.run(backend_versions(backend)()) == ["run-a"]

    plain = SharedBackend(str(open_serving(run_uri(store, "run-a"))), ["care"])  # a run dir: its own record
    plain.load()
    assert plain.run_id == "run-a"

    record = read_release(channel_uri(store, "prod"))
    write_release(open_store(channel_uri(store, "prod")), {**record, "state": "promoting"})
    with pytest.raises(ChannelError, match="being promoted"):
        SharedBackend(channel_uri(store, "prod"), ["care"]).load()
