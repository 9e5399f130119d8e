"""KFP: every component and the pipeline compile with the Kubernetes settings; the pipeline runs under
kfp.local, and a run killed mid-stage reruns reusing finished stages, with no half-written artifact."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import components  # noqa: E402
from cmva.config import PlatformCfg  # noqa: E402
from cmva.kfp_runner import compile_pipeline  # noqa: E402


def _components():
    for m in pkgutil.iter_modules(components.__path__):
        mod = importlib.import_module(f"components.{m.name}")
        yield m.name, getattr(mod, m.name)


def test_every_component_compiles_and_is_thin(tmp_path):
    from kfp import compiler

    names = []
    for name, comp in _components():
        names.append(name)
        compiler.Compiler().compile(comp, str(tmp_path / f"{name}.yaml"))
        spec = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        executor = next(iter(spec["deploymentSpec"]["executors"].values()))
        assert executor["container"]["image"] == components.TRAIN_IMAGE
        assert "pip install" not in json.dumps(executor["container"]["command"]), f"{name}: no packages_to_install"
        lines = [ln for ln in (ROOT / "components" / f"{name}.py").read_text().splitlines() if ln.strip()]
        assert len(lines) <= 20, f"components/{name}.py has {len(lines)} lines"
    assert set(names) == {
        "import_base",
        "train_rewards",
        "train_agent",
        "build_aggregator_data",
        "train_aggregator",
        "evaluate",
        "publish_for_serving",
    }


def test_pipeline_yaml_carries_gpu_node_pool_and_secret(tmp_path):
    p = PlatformCfg(
        node_selector={"pool": "a100"}, accelerator_type="nvidia.com/gpu", accelerator_count=2, s3_secret="minio-creds"
    )
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path, p).read_text()))
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = spec["deploymentSpec"]["executors"]
    for name, ex in executors.items():
        gpu = any(
            s.replace("-", "_") in name.replace("-", "_")
            for s in ("train_agent", "build_aggregator_data", "train_aggregator", "evaluate")
        )
        res = ex["container"].get("resources", {})
        if gpu:
            assert (
                res["accelerator"]["resourceCount"] == "2" and res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            ), name
            assert platform[name]["nodeSelector"]["labels"] == {"pool": "a100"}
            assert platform[name]["tolerations"][0]["key"] == "nvidia.com/gpu"
        else:
            assert "accelerator" not in res, name
        secret = platform[name]["secretAsEnv"][0]
        assert secret["secretName"] == "minio-creds"
        assert {m["envVar"] for m in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"profile", "overrides", "values", "mic_uri", "socialchem_uri", "store_uri"} <= set(params)
    assert not any("SECRET" in k.upper() or "KEY" in k.upper() for k in params), "credentials must not be parameters"
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert "parameterIterator" in loop and "iteratorPolicy" not in loop  # all agents at once on Kubeflow


def test_agent_parallelism_is_compiled(tmp_path):
    """Local runs train one agent at a time (one machine); the limit reaches the IR that kfp.local reads."""
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path, PlatformCfg(agent_parallelism=1)).read_text()))
    assert spec["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"]["parallelismLimit"] == 1


def _cli(root, *extra, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, "-m", "cmva.cli", "pipeline", "run", "--local", "--profile", "smoke", "--root", str(root)]
    cmd += list(extra)
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_local_pipeline_killed_mid_stage_then_rerun(tmp_path):
    root = tmp_path / "kfp"
    proc = _cli(root)
    deadline = time.time() + 600
    outputs = root / "smoke" / "outputs"
    # Kill while an agent is training: import-base and train-rewards are finished and cached by then.
    while time.time() < deadline and not list(outputs.glob("cmva-gs-*/for-loop-1-iteration-*")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = next(outputs.glob("cmva-gs-*"))
    assert (first / "import-base" / "base" / "model.safetensors").is_file()
    assert not (first / "evaluate").exists()
    for agent_dir in first.glob("for-loop-1-iteration-*/agent"):  # visible only when complete
        assert (agent_dir / "adapter_model.safetensors").is_file() and (agent_dir / "summary.json").is_file()

    from cmva.serving.launcher import free_port_block

    # As `make run` does: after the pipeline, one question through the packed serving chain.
    rerun = _cli(root, "--ask", "Should I tell my friend the truth?", "--port", str(free_port_block(4)))
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-4000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    executed = set(re.findall(r"Executing task '([a-z-]+)'", plain))
    assert "train-aggregator" in executed and "evaluate" in executed  # the unfinished stages ran
    assert not executed & {"import-base", "train-rewards"}, executed  # finished stages came from the cache
    second = sorted(outputs.glob("cmva-gs-*"))[-1]
    assert second != first and not (second / "import-base").exists() and not (second / "train-rewards").exists()
    report = second / "evaluate" / "report"
    assert json.loads((report / "report.json").read_text())["rouge"]["cmva-gs"]["rougeL"] >= 0
    executor = json.loads((second / "evaluate" / "executor_output.json").read_text())
    metrics = executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert {"rougeL_cmva-gs", "rougeL_pt", "conformity_delta_care", "sensitivity_cmva_gs_n"} <= set(metrics)
    assert "sensitivity_weighted_merge_n" in metrics  # the merge baseline ran on the graded probes
    assert (second / "evaluate" / "report_md").read_text().startswith("# CMVA-GS evaluation")
    assert "data:image/png;base64" in (second / "evaluate" / "report_html").read_text()
    assert "serving chain (packed)" in plain and "CMVA-GS answer:" in plain and "[care agent, reward" in plain
    serving = list((root / "smoke" / "serving").iterdir())
    assert len(serving) == 1 and (serving[0] / "agents" / "care" / "_manifest.json").is_file()
