"""KFP: the compiled IR (publish after evaluate under the quality gate's condition, display names, retries,
timeouts, per-stage resources, no GPU for cpu/smoke, labels, pull secrets, image digest, parameter docs); the
components compile from the package; a failing gate blocks publishing under kfp.local; `cmva pipeline submit`
uploads the pipeline or a new version and starts the run (against a stand-in kfp.Client); the pipeline runs
under kfp.local, and a run killed mid-stage reruns reusing finished stages, with no half-written artifact."""

# No `from __future__ import annotations`: the test pipeline's parameter types are read by KFP.
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
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import components  # noqa: E402
from cmva import kfp_components  # noqa: E402
from cmva.config import PlatformCfg, task_resources  # noqa: E402
from cmva.kfp_runner import compile_pipeline  # noqa: E402

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]
DIGEST = "sha256:" + "ab" * 32
GPU_STAGES = {"train-agent", "build-aggregator-data", "train-aggregator", "evaluate"}


def _components():
    for m in pkgutil.iter_modules(components.__path__):
        mod = importlib.import_module(f"components.{m.name}")
        yield m.name, getattr(mod, m.name)


def test_every_component_compiles_from_the_package_and_the_top_level_is_thin(tmp_path):
    from kfp import compiler

    names = []
    for name, comp in _components():
        names.append(name)
        assert comp is getattr(kfp_components, name), f"components/{name}.py must re-export cmva.kfp_components"
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
        "train_agent_trainjob",  # multi-node platforms: a Kubeflow Trainer TrainJob (tests/pipelines/test_trainjob.py)
        "collect_agents",
        "build_aggregator_data",
        "train_aggregator",
        "train_aggregator_trainjob",
        "evaluate",
        "quality_gate",
        "publish_for_serving",
        "promote",
    }
    from cmva.values import ALL_VALUES

    collect = yaml.safe_load((tmp_path / "collect_agents.yaml").read_text())
    inputs = collect["root"]["inputDefinitions"]["artifacts"]
    assert set(inputs) == set(ALL_VALUES) and all(i["isOptional"] for i in inputs.values())  # any value set


def test_pipeline_module_needs_no_top_level_packages():
    """`cmva pipeline compile|submit` from a wheel or the train image: nothing imports components/ or pipelines/."""
    code = (
        f"import sys; sys.path = [p for p in sys.path if p not in ('', '.', {str(ROOT)!r})]; "
        "import cmva.kfp_runner as r, tempfile; r.compile_pipeline(tempfile.mkdtemp()); "
        "assert 'components' not in sys.modules and 'pipelines' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True, timeout=300)


def _compile(tmp_path, profile="paper", **platform):
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path, PlatformCfg(**platform), profile=profile).read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _stage(executor: str) -> str:
    return re.sub(r"-\d+$", "", executor.removeprefix("exec-"))


def test_ir_publishes_after_evaluate_only_when_the_gate_passes(tmp_path):
    spec, _ = _compile(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert "publish-for-serving" not in tasks and "promote" not in tasks
    assert tasks["quality-gate"]["dependentTasks"] == ["evaluate"]
    assert tasks["quality-gate"]["inputs"]["artifacts"]["report"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    gate_cond = next(t for t in tasks.values() if t.get("taskInfo", {}).get("name") == "quality-gate-passed")
    assert "quality-gate" in gate_cond["dependentTasks"]
    assert (
        gate_cond["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--quality-gate-Output'] == 'pass'"
    )
    inner = spec["components"][gate_cond["componentRef"]["name"]]["dag"]["tasks"]
    assert "publish-for-serving" in inner
    assert inner["publish-for-serving"]["inputs"]["parameters"]["version"]["runtimeValue"]["constant"] == (
        "{{$.pipeline_job_uuid}}"
    )
    promote_cond = next(t for t in inner.values() if t.get("taskInfo", {}).get("name") == "promotion-requested")
    assert promote_cond["dependentTasks"] == ["publish-for-serving"]
    assert promote_cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--channel'] != ''"
    assert "promote" in spec["components"][promote_cond["componentRef"]["name"]]["dag"]["tasks"]


def test_ir_display_names_retries_and_parallelism(tmp_path):
    spec, _ = _compile(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    agents = {k: t for k, t in tasks.items() if k.startswith("train-agent")}
    assert sorted(t["taskInfo"]["name"] for t in agents.values()) == sorted(f"train-agent: {v}" for v in VALUES)
    for t in agents.values():
        value = t["inputs"]["parameters"]["value"]["runtimeValue"]["constant"]
        assert t["taskInfo"]["name"] == f"train-agent: {value}"
        assert "dependentTasks" not in t or set(t["dependentTasks"]) == {"import-base", "train-rewards"}  # all at once
    every = list(tasks.values())
    for t in tasks.values():
        if "componentRef" in t and t["componentRef"]["name"].startswith("comp-condition"):
            every += _nested_tasks(spec, t["componentRef"]["name"])
    containers = [t for t in every if not t["componentRef"]["name"].startswith("comp-condition")]
    assert len(containers) == 14
    for t in containers:
        assert t["retryPolicy"]["maxRetryCount"] == 2 and t["retryPolicy"]["backoffDuration"] == "60s", t["taskInfo"]

    spec, _ = _compile(tmp_path, agent_parallelism=2)
    tasks = spec["root"]["dag"]["tasks"]
    by_value = {
        t["inputs"]["parameters"]["value"]["runtimeValue"]["constant"]: k
        for k, t in tasks.items()
        if k.startswith("train-agent")
    }
    for i, v in enumerate(VALUES):
        deps = set(tasks[by_value[v]].get("dependentTasks", []))
        assert (by_value[VALUES[i - 2]] in deps) == (i >= 2), v  # two agents at a time

    spec, _ = _compile(tmp_path, display_names=False)  # for KFP backends that lose renamed tasks' artifacts
    assert all(t["taskInfo"]["name"] == k for k, t in spec["root"]["dag"]["tasks"].items() if k.startswith("train-"))


def _nested_tasks(spec, comp):
    out = []
    for t in spec["components"][comp]["dag"]["tasks"].values():
        out.append(t)
        if t["componentRef"]["name"].startswith("comp-condition"):
            out += _nested_tasks(spec, t["componentRef"]["name"])
    return out


def test_ir_resources_gpu_labels_secrets_image(tmp_path):
    spec, platform = _compile(
        tmp_path,
        node_selector={"pool": "a100"},
        accelerator_count=2,
        s3_secret="minio-pipeline",
        image="registry.local:5000/cmva/cmva-train:0.2.0",
        image_digest=DIGEST,
        image_pull_secrets=["regcred"],
        resources={"train-agent": {"memory_limit": "64Gi", "cpu_limit": "8"}},
    )
    executors = spec["deploymentSpec"]["executors"]
    assert {_stage(e) for e in executors} == set(task_resources())
    for name, ex in executors.items():
        stage, res = _stage(name), ex["container"]["resources"]
        want = task_resources()[stage]
        assert ex["container"]["image"] == f"registry.local:5000/cmva/cmva-train@{DIGEST}", name
        assert ex["container"]["env"] == [
            {"name": "AWS_ENDPOINT_URL", "value": "http://minio.cmva.svc.cluster.local:9000"}
        ]
        assert res["resourceCpuRequest"] == want.cpu_request and res["resourceMemoryRequest"] == want.memory_request
        k8s = platform[name]
        assert int(k8s["activeDeadlineSeconds"]) == want.timeout_s
        assert k8s["podMetadata"]["labels"] == {
            "app.kubernetes.io/part-of": "cmva",
            "cmva.io/role": "pipeline",
            "cmva.io/stage": stage,
        }
        assert [s["secretName"] for s in k8s["imagePullSecret"]] == ["regcred"]
        secret = k8s["secretAsEnv"][0]
        assert secret["secretName"] == "minio-pipeline"
        assert {m["envVar"] for m in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        if stage in GPU_STAGES:
            assert res["accelerator"]["resourceCount"] == "2" and res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert (
                k8s["nodeSelector"]["labels"] == {"pool": "a100"} and k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
            )
        else:
            assert "accelerator" not in res and "nodeSelector" not in k8s, name
        if stage == "train-agent":
            assert res["resourceMemoryLimit"] == "64Gi" and res["resourceCpuLimit"] == "8"
            assert res["resourceMemoryRequest"] == "16Gi"  # the stage's other defaults stay

    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"profile", "overrides", "mic_uri", "socialchem_uri", "eval_uri", "store_uri", "channel"}
    assert all(p.get("description") for p in params.values()), "every parameter is described in the UI"
    assert params["profile"]["defaultValue"] == "paper" and params["channel"]["defaultValue"] == "staging"
    assert not any("SECRET" in k.upper() or "KEY" in k.upper() for k in params), "credentials must not be parameters"
    assert "care, fairness, loyalty, authority, sanctity" in spec["pipelineInfo"]["description"]


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_ir_requests_no_gpu_for_cpu_profiles(tmp_path, profile):
    spec, platform = _compile(tmp_path, profile=profile)
    for name, ex in spec["deploymentSpec"]["executors"].items():
        assert "accelerator" not in ex["container"]["resources"], name
        assert "nodeSelector" not in platform[name] and "tolerations" not in platform[name], name
    spec, _ = _compile(tmp_path, profile=profile, gpu=True)  # a platform file may still ask for GPUs
    assert "accelerator" in spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["resources"]


@pytest.mark.parametrize("profile, gpus, want", [("paper", 4, 4), ("paper", 1, 1), ("cpu", 4, 1)])
def test_ir_training_pods_run_one_process_per_gpu(tmp_path, profile, gpus, want):
    spec, _ = _compile(tmp_path, profile=profile, accelerator_count=gpus)
    training = {
        n: t for n, t in spec["root"]["dag"]["tasks"].items() if _stage(n) in ("train-agent", "train-aggregator")
    }
    assert len(training) == 6
    for name, task in training.items():
        assert task["inputs"]["parameters"]["nproc"]["runtimeValue"]["constant"] == want, name


def test_ir_report_markdown_inlines_its_plots(tmp_path):
    from cmva.kfp_ops import inline_images, report_html

    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "rouge.png").write_bytes(png)
    md = inline_images("# R\n\n![ROUGE](rouge.png)\n\n![gone](missing.png)\n", tmp_path)
    assert "![ROUGE](data:image/png;base64,iVBORw0KGgpmYWtl)" in md and "![gone](missing.png)" in md
    assert '<img alt="ROUGE" src="data:image/png;base64,iVBORw0KGgpmYWtl"/>' in report_html(md, tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The gate's condition under kfp.local, on hand-made reports: the real components, no training.
# ---------------------------------------------------------------------------------------------------------------


def _fake_artifacts(root: Path, cmva_rouge: float) -> dict[str, Path]:
    out = {}
    for name in ("base", "rewards", "aggregator", "agents/care"):
        d = root / name
        d.mkdir(parents=True)
        (d / "weights.bin").write_text(name)
        out[name] = d
    (out["agents/care"] / "summary.json").write_text(json.dumps({"value": "care"}))
    report = root / "report"
    report.mkdir()
    rouge = {"cmva-gs": cmva_rouge, "pt": 0.10, "few-shot": 0.15, "prompt-aggregation": 0.05, "weighted-merge": 0.12}
    (report / "report.json").write_text(
        json.dumps({"rouge": {s: {"rougeL": v} for s, v in rouge.items()}, "conformity": {"care": {"delta": 0.1}}})
    )
    out["report"] = report
    return out


def test_gate_condition_under_kfp_local(tmp_path):
    from kfp import dsl, local
    from kfp.dsl import Model

    from cmva.channels import read_release

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "outputs"))

    @dsl.pipeline(name="gate-check")
    def gate_check(report_uri: str, base: str, rewards: str, agent: str, aggregator: str, store_uri: str):
        imp = {
            k: dsl.importer(artifact_uri=u, artifact_class=Model)
            for k, u in dict(report=report_uri, base=base, rewards=rewards, agent=agent, aggregator=aggregator).items()
        }
        gate = kfp_components.quality_gate(
            profile="smoke", overrides={"gate.enforce": True}, report=imp["report"].output
        )
        with dsl.If(gate.outputs["Output"] == "pass"):
            kfp_components.publish_for_serving(
                store_uri=store_uri,
                version=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                base=imp["base"].output,
                rewards=imp["rewards"].output,
                agents=imp["agent"].output,
                aggregator=imp["aggregator"].output,
            )

    for cmva_rouge, published in ((0.14, False), (0.20, True)):  # below / above few-shot's 0.15
        a = _fake_artifacts(tmp_path / f"in-{cmva_rouge}", cmva_rouge)
        store = tmp_path / f"store-{cmva_rouge}"
        gate_check(
            report_uri=str(a["report"]),
            base=str(a["base"]),
            rewards=str(a["rewards"]),
            agent=str(a["agents/care"]),
            aggregator=str(a["aggregator"]),
            store_uri=str(store),
        )
        runs = [d for d in store.iterdir()] if store.exists() else []
        assert bool(runs) == published, (cmva_rouge, runs)
        if published:
            assert read_release(str(runs[0]))["run_id"] == runs[0].name
            assert (runs[0] / "agents" / "care" / "_manifest.json").is_file()
    verdicts = sorted((tmp_path / "outputs").glob("gate-check-*/quality-gate/verdict"), key=lambda p: p.stat().st_mtime)
    assert "**FAILED**" in verdicts[0].read_text() and "**PASSED**" in verdicts[1].read_text()


# ---------------------------------------------------------------------------------------------------------------
# `cmva pipeline submit` against a stand-in for kfp.Client (no cluster here): the calls and their arguments.
# ---------------------------------------------------------------------------------------------------------------


class FakeClient:
    """Records calls; `pipelines` / `versions` say what the server already holds."""

    made: list = []
    pipelines: list = []
    versions: dict = {}

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        FakeClient.made.append(self)

    def _call(self, call, **kw):
        self.calls.append((call, kw))

    def list_pipelines(self, filter=None, namespace=None, **kw):
        self._call("list_pipelines", filter=json.loads(filter), namespace=namespace)
        return SimpleNamespace(pipelines=list(self.pipelines))

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, description=None, namespace=None):
        ir = next(yaml.safe_load_all(Path(pipeline_package_path).read_text()))
        self._call("upload_pipeline", name=pipeline_name, description=description, namespace=namespace, ir=ir)
        FakeClient.versions.setdefault("p-new", []).append(
            SimpleNamespace(pipeline_version_id="v-first", display_name=pipeline_name)
        )
        return SimpleNamespace(pipeline_id="p-new")

    def list_pipeline_versions(self, pipeline_id, page_token="", page_size=10, sort_by="", filter=None):
        self._call("list_pipeline_versions", pipeline_id=pipeline_id, filter=filter, sort_by=sort_by)
        vs = FakeClient.versions.get(pipeline_id, [])
        if filter:
            name = json.loads(filter)["predicates"][0]["stringValue"]
            vs = [v for v in vs if v.display_name == name]
        return SimpleNamespace(pipeline_versions=vs[::-1][:page_size] or None)

    def upload_pipeline_version(
        self, pipeline_package_path, pipeline_version_name, pipeline_id=None, pipeline_name=None, description=None
    ):
        ir = next(yaml.safe_load_all(Path(pipeline_package_path).read_text()))
        self._call("upload_pipeline_version", name=pipeline_version_name, pipeline_id=pipeline_id, ir=ir)
        v = SimpleNamespace(
            pipeline_version_id=f"v-{len(FakeClient.versions.get(pipeline_id, []))}", display_name=pipeline_version_name
        )
        FakeClient.versions.setdefault(pipeline_id, []).append(v)
        return v

    def create_experiment(self, name, description=None, namespace=None):
        self._call("create_experiment", name=name, namespace=namespace)
        return SimpleNamespace(experiment_id="e-1")

    def run_pipeline(self, **kw):
        self._call("run_pipeline", **kw)
        return SimpleNamespace(run_id="r-42")


@pytest.fixture
def fake_kfp(monkeypatch):
    import kfp

    FakeClient.made, FakeClient.pipelines, FakeClient.versions = [], [], {}
    monkeypatch.setattr(kfp, "Client", FakeClient)
    return FakeClient


def _submit_cli(*extra):
    from typer.testing import CliRunner

    from cmva.cli import app

    args = ["pipeline", "submit", "--host", "https://kf.example.com/pipeline", "--namespace", "team-a", *extra]
    return CliRunner().invoke(app, args, env={"CMVA_KFP_TOKEN": "tok-123"})


def test_submit_uploads_the_pipeline_then_runs_it(fake_kfp):
    r = _submit_cli(
        "--experiment",
        "nightly",
        "--run-name",
        "cmva paper #7",
        "--profile",
        "paper",
        "--set",
        "agent.max_steps=5",
        "--mic-uri",
        "s3://data/mic.csv",
        "--socialchem-uri",
        "s3://data/sc.tsv",
        "--store-uri",
        "s3://cmva/serving",
        "--channel",
        "staging",
        "--image-digest",
        DIGEST,
        "--service-account",
        "pipeline-runner",
    )
    assert r.exit_code == 0, r.output
    assert "run id: r-42" in r.output
    (client,) = fake_kfp.made
    assert client.kwargs == {
        "host": "https://kf.example.com/pipeline",
        "namespace": "kubeflow",
        "existing_token": "tok-123",
    }
    calls = dict(client.calls)
    assert [c for c, _ in client.calls] == [
        "list_pipelines",
        "upload_pipeline",
        "list_pipeline_versions",
        "list_pipeline_versions",
        "create_experiment",
        "run_pipeline",
    ]
    assert calls["list_pipelines"]["namespace"] == "team-a"
    up = calls["upload_pipeline"]
    assert up["name"] == "cmva-gs" and up["namespace"] == "team-a" and "moral agent" in up["description"]
    assert {e["container"]["image"] for e in up["ir"]["deploymentSpec"]["executors"].values()} == {
        f"ghcr.io/cmva/cmva-train@{DIGEST}"
    }
    assert calls["create_experiment"] == {"name": "nightly", "namespace": "team-a"}
    run = calls["run_pipeline"]
    assert run["experiment_id"] == "e-1" and run["job_name"] == "cmva paper #7"
    assert (
        run["pipeline_id"] == "p-new" and run["version_id"] == "v-first" and run["service_account"] == "pipeline-runner"
    )
    assert run["params"] == {
        "profile": "paper",
        "overrides": {"agent.max_steps": 5},
        "mic_uri": "s3://data/mic.csv",
        "socialchem_uri": "s3://data/sc.tsv",
        "eval_uri": "",
        "store_uri": "s3://cmva/serving",
        "channel": "staging",
    }


def test_submit_adds_a_version_when_the_pipeline_exists(fake_kfp):
    fake_kfp.pipelines = [SimpleNamespace(pipeline_id="p-7")]
    fake_kfp.versions = {
        "p-7": [SimpleNamespace(pipeline_version_id="v-old", display_name="cmva-gs-0.0.9-000000000000")]
    }
    r = _submit_cli("--profile", "smoke")
    assert r.exit_code == 0, r.output
    calls = dict(fake_kfp.made[-1].calls)
    assert "upload_pipeline" not in calls
    new = calls["upload_pipeline_version"]
    assert new["pipeline_id"] == "p-7" and re.fullmatch(r"cmva-gs-[\w.+]+-[0-9a-f]{12}", new["name"])
    assert calls["run_pipeline"]["version_id"] == "v-1" and calls["run_pipeline"]["params"]["profile"] == "smoke"

    r = _submit_cli("--profile", "smoke")  # the same IR again: its version is reused, nothing uploaded
    assert r.exit_code == 0, r.output
    names = [c for c, _ in fake_kfp.made[-1].calls]
    assert "upload_pipeline_version" not in names and "upload_pipeline" not in names
    assert dict(fake_kfp.made[-1].calls)["run_pipeline"]["version_id"] == "v-1"

    r = _submit_cli("--profile", "smoke", "--values", "care,fairness")  # another IR: another version
    assert r.exit_code == 0, r.output
    assert dict(fake_kfp.made[-1].calls)["upload_pipeline_version"]["name"] != new["name"]


def test_submit_auth_options(fake_kfp, tmp_path):
    from cmva.kfp_runner import kfp_client

    token_file = tmp_path / "token"
    token_file.write_text("sa-token")
    client = kfp_client("https://kf", sa_token_path=str(token_file))
    assert type(client.kwargs["credentials"]).__name__ == "ServiceAccountTokenVolumeCredentials"
    assert kfp_client("https://kf", cookies="authservice_session=abc").kwargs["cookies"] == "authservice_session=abc"
    with pytest.raises(ValueError, match="one of"):
        kfp_client("https://kf", token="t", cookies="c")


# ---------------------------------------------------------------------------------------------------------------
# The whole smoke pipeline under kfp.local, killed mid-stage, rerun.
# ---------------------------------------------------------------------------------------------------------------


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
    while time.time() < deadline and not list(outputs.glob("cmva-gs-*/train-agent*")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = next(outputs.glob("cmva-gs-*"))
    assert (first / "import-base" / "base" / "model.safetensors").is_file()
    assert not (first / "evaluate").exists()
    for agent_dir in first.glob("train-agent*/agent"):  # visible only when complete
        assert (agent_dir / "adapter_model.safetensors").is_file() and (agent_dir / "summary.json").is_file()

    from cmva.serving.launcher import free_port_block

    # As `make run` does: after the pipeline, one question through the packed serving chain.
    rerun = _cli(root, "--ask", "Should I tell my friend the truth?", "--port", str(free_port_block(4)))
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-4000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    executed = set(re.findall(r"Executing task '([a-z0-9-]+)'", plain))
    assert {"train-aggregator", "evaluate", "quality-gate", "publish-for-serving", "promote"} <= executed
    assert not executed & {"import-base", "train-rewards"}, executed  # finished stages came from the cache
    second = sorted(outputs.glob("cmva-gs-*"))[-1]
    assert second != first and not (second / "import-base").exists() and not (second / "train-rewards").exists()
    report = second / "evaluate" / "report"
    assert json.loads((report / "report.json").read_text())["rouge"]["cmva-gs"]["rougeL"] >= 0
    executor = json.loads((second / "evaluate" / "executor_output.json").read_text())
    metrics = executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert {"rougeL_cmva-gs", "rougeL_pt", "conformity_delta_care", "sensitivity_cmva_gs_n"} <= set(metrics)
    assert "sensitivity_weighted_merge_n" in metrics  # the merge baseline ran on the graded probes
    report_md = (second / "evaluate" / "report_md").read_text()
    assert report_md.startswith("# CMVA-GS evaluation") and "](data:image/png;base64," in report_md
    assert "data:image/png;base64" in (second / "evaluate" / "report_html").read_text()
    assert "# Quality gate" in plain and ("not enforced" in plain or "**PASSED**" in plain)  # smoke: never blocks
    assert "serving chain (packed)" in plain and "CMVA-GS answer:" in plain and "[care agent, reward" in plain
    serving = root / "smoke" / "serving"
    runs = [d for d in serving.iterdir() if d.name != "channels"]
    assert len(runs) == 1 and (runs[0] / "agents" / "care" / "_manifest.json").is_file()
    release = json.loads((serving / "channels" / "staging" / "release" / "release.json").read_text())
    assert release["run_id"] == runs[0].name and release["state"] == "ready"
    assert f"channel staging ({serving / 'channels' / 'staging'}) serves run {runs[0].name}" in plain
