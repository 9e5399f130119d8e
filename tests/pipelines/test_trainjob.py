"""Multi-node training through Kubeflow Trainer v2 (cmva.trainjob): the TrainJob and the cmva ClusterTrainingRuntime
validate against the Trainer CRDs (../shared/schemas/trainer, skipped with the reason when absent); `cmva pipeline
compile --platform pipelines/platforms/multinode.yaml` gives training tasks that launch TrainJobs; the launcher
creates, streams, waits and fails against a stand-in Kubernetes API; artifacts travel through S3 (moto) to the node
entry and back; the RBAC of manifests/trainer renders with kubectl's kustomize and validates."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.serving.test_manifests import K8S_VERSIONS, SCHEMAS, _strict, kustomize, needs_kubectl

ROOT = Path(__file__).resolve().parents[2]
MULTINODE = ROOT / "pipelines" / "platforms" / "multinode.yaml"
TRAINER = ("trainer.kubeflow.org", "v1alpha1")
RUN_ID = "0b6f8a8e-1b9c-4f3e-9f57-1c2d3e4f5a6b"


def _platform(**changes):
    from cmva.config import PlatformCfg

    data = yaml.safe_load(MULTINODE.read_text())
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return PlatformCfg.model_validate(data)


def _body(stage="train-agent", value="care", **changes) -> dict:
    from cmva.trainjob import job_name, launch_spec, trainjob

    spec = launch_spec(_platform(**changes), stage, gpu=True)
    return trainjob(spec["trainjob"], job_name(stage, value, RUN_ID, "pod-a"), [stage, "{}"], RUN_ID)


# --- the objects against the Trainer CRDs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_crds():
    """kind → Draft 7 validator of the Trainer CRDs' v1alpha1 schema, unknown fields are errors."""
    import jsonschema

    where = SCHEMAS / "trainer"
    if not where.is_dir():
        pytest.skip(
            f"Trainer CRD schemas not found at {where}: set CMVA_CRD_SCHEMAS to a directory with trainer/ (CI has one)"
        )
    out = {}
    for f in sorted(where.glob("trainer.kubeflow.org_*.yaml")):
        crd = yaml.safe_load(f.read_text())
        v = next(v for v in crd["spec"]["versions"] if v["name"] == TRAINER[1])
        out[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(_strict(v["schema"]["openAPIV3Schema"]))
    assert {"TrainJob", "ClusterTrainingRuntime"} <= set(out)
    return out


def _errors(validator, obj) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def _cel_name_rules(name: str) -> bool:
    """The TrainJob CRD's x-kubernetes-validations on metadata.name (CEL: jsonschema does not run them)."""
    return bool(re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)) and len(name) <= 63


@pytest.mark.parametrize("stage", ["train-agent", "train-aggregator"])
def test_trainjob_validates_against_the_trainer_crd(trainer_crds, stage):
    body = _body(stage, "care" if stage == "train-agent" else None)
    assert not _errors(trainer_crds["TrainJob"], body)
    assert _cel_name_rules(body["metadata"]["name"]) and len(body["metadata"]["name"]) <= 40  # JobSet pod names
    trainer = body["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer["command"] == ["torchrun", "-m", "cmva.trainjob_node"] and trainer["args"][0] == stage
    assert body["spec"]["runtimeRef"] == {
        "name": "cmva-torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    env = {e["name"]: e for e in trainer["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.cmva.svc.cluster.local:9000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # keys from the Secret, never literal values
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "cmva-s3", "key": key}}}
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["name"] == "node"
    assert pod["template"]["spec"]["template"]["metadata"]["labels"]["cmva.io/role"] == "pipeline"  # MinIO admits it
    assert pod["template"]["spec"]["template"]["spec"]["nodeSelector"] == {"cmva.io/pool": "gpu"}
    assert body["metadata"]["labels"]["cmva.io/kfp-run-id"] == RUN_ID


def test_the_trainer_validators_reject_what_a_cluster_rejects(trainer_crds):
    """The checks can fail: a misspelled field, a wrong type, a missing runtimeRef, a bad name."""
    good = _body()
    for mutate in (
        lambda d: d["spec"]["trainer"].update(numProcsPerNode=4),
        lambda d: d["spec"]["trainer"].update(numNodes="2"),
        lambda d: d["spec"].pop("runtimeRef"),
        lambda d: d["spec"]["runtimePatches"][0].pop("manager"),
    ):
        bad = copy.deepcopy(good)
        mutate(bad)
        assert _errors(trainer_crds["TrainJob"], bad)
    assert not _cel_name_rules("cmva-Agent-care") and not _cel_name_rules("x" * 64)
    stock = yaml.safe_load((SCHEMAS / "trainer" / "example-torch-distributed-runtime.yaml").read_text())
    assert not _errors(trainer_crds["ClusterTrainingRuntime"], stock)
    stock["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = 4  # moved to TrainJob.spec.trainer in this API version
    assert _errors(trainer_crds["ClusterTrainingRuntime"], stock)


@needs_kubectl
def test_cmva_runtime_renders_and_validates(trainer_crds):
    docs = kustomize(ROOT / "manifests" / "trainer")
    runtimes = [d for d in docs if d["kind"] == "ClusterTrainingRuntime"]
    assert len(runtimes) == 1
    rt = runtimes[0]
    assert "namespace" not in rt["metadata"]  # cluster-scoped
    assert not _errors(trainer_crds["ClusterTrainingRuntime"], rt)
    assert rt["metadata"]["name"] == _body()["spec"]["runtimeRef"]["name"]  # what the TrainJobs reference
    assert rt["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch" and "torch" in rt["spec"]["mlPolicy"]
    (node,) = rt["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    job = node["template"]["spec"]
    pod = job["template"]
    assert job["backoffLimit"] == 0 and pod["spec"]["restartPolicy"] == "Never"  # a failed process fails the job
    assert pod["metadata"]["labels"]["cmva.io/role"] == "pipeline"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "node"  # the container the TrainJob's trainer fields and PET_* env go to
    shm = {v["name"]: v for v in pod["spec"]["volumes"]}[
        next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    ]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


# --- RBAC ------------------------------------------------------------------------------------------------------


def _rbac(docs) -> tuple[dict, dict]:
    role = next(d for d in docs if d["kind"] == "Role")
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    return role, binding


def _allowed(role: dict, group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in role["rules"])


@needs_kubectl
def test_rbac_lets_the_pipeline_create_and_watch_trainjobs(tmp_path):
    import kubernetes_validate

    docs = kustomize(ROOT / "manifests" / "trainer")
    for d in docs:
        if d["kind"] in ("Role", "RoleBinding"):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(d, version, strict=True)
    role, binding = _rbac(docs)
    for verb in ("create", "get", "list", "watch", "delete"):
        assert _allowed(role, "trainer.kubeflow.org", "trainjobs", verb), verb
    assert _allowed(role, "", "pods", "list") and _allowed(role, "", "pods/log", "get")
    assert not _allowed(role, "", "secrets", "get") and not any("*" in r["verbs"] for r in role["rules"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (subject,) = binding["subjects"]
    assert (subject["kind"], subject["name"]) == ("ServiceAccount", "default-editor")
    assert subject["namespace"] == role["metadata"]["namespace"] == binding["metadata"]["namespace"]

    # Another pipelines namespace, as the kustomization says: its `namespace:` moves the Role, the binding and
    # the binding's subject (which kustomize's namespace transformer alone would leave behind).
    k = shutil.copytree(ROOT / "manifests" / "trainer" / "rbac", tmp_path / "rbac")
    text = (k / "kustomization.yaml").read_text()
    (k / "kustomization.yaml").write_text(re.sub(r"(?m)^namespace: .*$", "namespace: team-a", text))
    role, binding = _rbac(kustomize(k))
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "team-a"
    assert binding["subjects"][0]["namespace"] == "team-a"


# --- the compiled pipeline -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multinode_ir(tmp_path_factory) -> tuple[dict, dict]:
    """`cmva pipeline compile --platform pipelines/platforms/multinode.yaml --profile paper`: (IR, Kubernetes part)."""
    from typer.testing import CliRunner

    from cmva.cli import app

    out = tmp_path_factory.mktemp("ir")
    res = CliRunner().invoke(app, ["pipeline", "compile", "--platform", str(MULTINODE), "--out", str(out)])
    assert res.exit_code == 0, res.output
    docs = list(yaml.safe_load_all((out / "cmva_gs.yaml").read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _executor(spec: dict, task: dict) -> dict:
    comp = spec["components"][task["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][comp["executorLabel"]], comp["executorLabel"]


def test_multinode_ir_launches_trainjobs_for_the_training_tasks(multinode_ir):
    from cmva.trainjob import job_name, trainjob

    spec, k8s = multinode_ir
    tasks = spec["root"]["dag"]["tasks"]
    training = {k: t for k, t in tasks.items() if k.startswith(("train-agent", "train-aggregator"))}
    assert len(training) == 6  # five agents and the aggregator
    for key, t in training.items():
        stage = "train-aggregator" if key.startswith("train-aggregator") else "train-agent"
        ex, label = _executor(spec, t)
        command = " ".join(ex["container"]["command"] + ex["container"]["args"])
        assert f"--function_to_execute {stage.replace('-', '_')}_trainjob" in command, key
        assert "accelerator" not in ex["container"]["resources"], key  # the launcher holds no GPU
        assert ex["container"]["resources"]["resourceMemoryLimit"] == "2Gi"
        assert "nodeSelector" not in k8s[label] and k8s[label]["podMetadata"]["labels"]["cmva.io/stage"] == stage
        assert int(k8s[label]["activeDeadlineSeconds"]) == 12 * 3600 + 600  # outlives the TrainJob's deadline
        params = t["inputs"]["parameters"]
        assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
        launch = params["launch"]["runtimeValue"]["constant"]
        assert launch["staging_uri"] == "s3://cmva/trainjobs" and launch["timeout_s"] == 12 * 3600
        body = trainjob(launch["trainjob"], job_name(stage, "care", RUN_ID, "pod"), [stage, "{}"], RUN_ID)
        assert body["spec"]["trainer"]["numNodes"] == 2 and body["spec"]["activeDeadlineSeconds"] == 12 * 3600
        for n in (body["spec"]["trainer"]["numNodes"], body["spec"]["trainer"]["numProcPerNode"]):
            assert type(n) is int  # the IR's numbers may be floats: the API server wants integers
        assert {"agent" if stage == "train-agent" else "aggregator", "metrics"} == set(
            spec["components"][t["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
        )
    # The other stages are unchanged pods; the GPU ones still request the accelerator themselves.
    ex, _ = _executor(spec, tasks["evaluate"])
    assert ex["container"]["resources"]["accelerator"]["resourceCount"] == "4"
    assert "--function_to_execute evaluate" in " ".join(ex["container"]["command"] + ex["container"]["args"])


def test_multinode_ir_trainjobs_validate_against_the_trainer_crd(multinode_ir, trainer_crds):
    """What each launcher will create, taken from the compiled IR as the task receives it."""
    from cmva.trainjob import job_name, trainjob

    spec, _ = multinode_ir
    launches = [
        (key, t["inputs"]["parameters"]["launch"]["runtimeValue"]["constant"])
        for key, t in spec["root"]["dag"]["tasks"].items()
        if "launch" in t.get("inputs", {}).get("parameters", {})
    ]
    assert len(launches) == 6
    for key, launch in launches:
        body = trainjob(launch["trainjob"], job_name(key, "care", RUN_ID, "pod"), ["x", "{}"], RUN_ID)
        assert not _errors(trainer_crds["TrainJob"], body), key


def test_pod_mode_compiles_as_before(tmp_path):
    from cmva.kfp_runner import compile_pipeline

    spec = yaml.safe_load_all(compile_pipeline(tmp_path, _platform(training={"mode": "pod"})).read_text())
    spec = next(spec)
    for key, t in spec["root"]["dag"]["tasks"].items():
        if key.startswith("train-"):
            assert "launch" not in t["inputs"]["parameters"], key
            assert not t["componentRef"]["name"].endswith("trainjob"), key


def test_training_settings_are_validated_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"training\.stages.*train-rewards"):
        _platform(training={"stages": ["train-rewards"]})
    with pytest.raises(ValidationError, match=r"training\.num_nodes"):
        _platform(training={"num_nodes": 0})
    with pytest.raises(ValidationError, match=r"training\.mode"):
        _platform(training={"mode": "mpi"})
    with pytest.raises(ValueError, match=r"training\.procs_per_node \(8\) exceeds accelerator_count \(4\)"):
        _body(training={"procs_per_node": 8})
    assert _platform(training={"stages": ["train-aggregator"]}).runs_as_trainjob("train-agent") is False


# --- the launcher against a stand-in Kubernetes API --------------------------------------------------------------


class FakeKube:
    """CustomObjectsApi + CoreV1Api: the TrainJob goes through `states`; node 0's pod appears once it runs."""

    def __init__(self, states: list[dict], log: str = "step 1 loss → 2.0\nstep 2 loss → 1.5\n", on_create=None):
        self.states, self.log, self.on_create = list(states), log, on_create
        self.created, self.deleted, self.selectors, self.gets = [], [], [], 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        self.created.append((namespace, copy.deepcopy(body)))
        if self.on_create:
            self.on_create(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.gets += 1
        status = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"metadata": {"name": name}, "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.deleted.append(name)

    def list_namespaced_pod(self, namespace, label_selector):
        self.selectors.append(label_selector)
        phase = "Running" if self.gets else "Pending"
        return SimpleNamespace(
            items=[SimpleNamespace(metadata=SimpleNamespace(name="n0"), status=SimpleNamespace(phase=phase))]
        )

    def read_namespaced_pod_log(self, name, namespace, container, follow, _preload_content):
        assert (name, container, follow, _preload_content) == ("n0", "node", True, False)
        data = self.log.encode()
        cut = 13  # inside the 3-byte "→": a character split over two chunks
        return SimpleNamespace(stream=lambda amt: iter([data[:cut], data[cut:]]), release_conn=lambda: None)


RUNNING: dict = {}
COMPLETE = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}
FAILED = {
    "conditions": [
        {"type": "Complete", "status": "False"},
        {"type": "Failed", "status": "True", "reason": "TrainingFailed", "message": "node-1: exit code 1 (CUDA OOM)"},
    ]
}


def _run(kube, timeout_s=2_000):
    """run_trainjob on `kube`, each clock reading 100 s after the last: a wait that never ends fails the test."""
    from cmva.trainjob import run_trainjob

    out, ticks = io.StringIO(), iter(range(0, 1_000_000, 100))
    clock = lambda: next(ticks)  # noqa: E731
    job = run_trainjob(_body(), "team-a", kube, kube, timeout_s, poll_s=1, out=out, sleep=lambda s: None, clock=clock)
    return job, out.getvalue()


def test_run_trainjob_creates_streams_node0_and_waits():
    kube = FakeKube([RUNNING, RUNNING, COMPLETE])
    job, log = _run(kube)
    ((namespace, body),) = kube.created
    assert namespace == "team-a" and body == _body()
    assert job["status"] == COMPLETE and kube.gets == 3
    assert log == "step 1 loss → 2.0\nstep 2 loss → 1.5\n"  # node 0's log, once, into the task's log
    assert "jobset.sigs.k8s.io/jobset-name=" + body["metadata"]["name"] in kube.selectors[0]
    assert "batch.kubernetes.io/job-completion-index=0" in kube.selectors[0]
    assert kube.deleted == [body["metadata"]["name"]]  # a completed job frees its nodes


def test_run_trainjob_raises_naming_the_failed_job_and_keeps_it():
    from cmva.trainjob import TrainJobFailed

    kube = FakeKube([RUNNING, FAILED])
    name = _body()["metadata"]["name"]
    with pytest.raises(TrainJobFailed, match=rf"TrainJob team-a/{name} failed: TrainingFailed: node-1: exit code 1"):
        _run(kube)
    assert kube.deleted == []  # kept for `kubectl describe`


def test_run_trainjob_times_out_and_deletes_the_job():
    from cmva.trainjob import TrainJobFailed

    kube = FakeKube([RUNNING])
    with pytest.raises(TrainJobFailed, match=r"did not finish within 250 s"):
        _run(kube, timeout_s=250)
    assert kube.deleted == [_body()["metadata"]["name"]]


# --- artifacts through S3: launcher → nodes → launcher -----------------------------------------------------------


def test_launch_stage_moves_artifacts_through_s3_to_the_nodes_and_back(s3_env, tmp_path, monkeypatch):
    """The launcher stages its inputs, every node process fetches them and runs the stage function, rank 0
    publishes the output, and the launcher copies it into the KFP artifact; a second agent reuses the staged base."""
    from cmva import kfp_ops, stages, trainjob, trainjob_node
    from cmva.storage import S3Store
    from cmva.trainjob import launch_spec

    monkeypatch.setenv("CMVA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CMVA_TRAINJOB_NAMESPACE", "team-a")
    calls = []

    def fake_agent(out, call):
        i = call.inputs
        calls.append((call.value, Path(i["base"], "weights.bin").read_text(), Path(i["rewards"], "r.txt").read_text()))
        summary = {"value": call.value, "reward_first": 0.1, "reward_last": 0.4}
        Path(out, "summary.json").write_text(json.dumps(summary))

    agent = dataclasses.replace(stages.BY_NAME["train-agent"], run=fake_agent)
    monkeypatch.setitem(stages.BY_NAME, "train-agent", agent)

    def nodes(body):  # what the two processes of the TrainJob run
        stage, spec = body["spec"]["trainer"]["args"]
        for rank in (1, 0):
            trainjob_node.run(stage, json.loads(spec), rank)

    inputs = {}
    for name, fname, text in (("base", "weights.bin", "W"), ("rewards", "r.txt", "R")):
        d = tmp_path / "kfp" / name
        d.mkdir(parents=True)
        (d / fname).write_text(text)
        inputs[name] = SimpleNamespace(uri=f"minio://mlpipeline/v2/artifacts/run/{name}", path=str(d))
    launch = launch_spec(_platform(training={"staging_uri": "s3://cmva-test/trainjobs"}), "train-agent", gpu=True)
    staging = S3Store("s3://cmva-test/trainjobs")
    for value in ("care", "fairness"):
        kube = FakeKube([COMPLETE], on_create=nodes)
        monkeypatch.setattr(trainjob, "kube_clients", lambda kube=kube: (kube, kube))
        out = tmp_path / "out" / value
        out.mkdir(parents=True)
        metrics = {}
        args = dict(value=value, profile="paper", overrides={}, values=["care", "fairness"], mic_uri="", **inputs)
        args |= dict(launch=launch, run_id=RUN_ID, agent=SimpleNamespace(path=str(out), metadata={}))
        args["metrics"] = SimpleNamespace(path=str(tmp_path / f"metrics-{value}"), log_metric=metrics.__setitem__)
        kfp_ops.run_trainjob_component("train-agent", args)
        assert metrics == {"reward_first": 0.1, "reward_last": 0.4} and args["agent"].metadata == {"value": value}
        assert json.loads((out / "summary.json").read_text())["value"] == value
        assert not (out / "_manifest.json").exists()  # the same files as a single-node run
        body = kube.created[0][1]
        spec = json.loads(body["spec"]["trainer"]["args"][1])
        assert spec["kwargs"]["value"] == value and all(
            u.startswith("s3://cmva-test/trainjobs/inputs/") for u in spec["inputs"].values()
        )
        assert spec["output"] == f"s3://cmva-test/trainjobs/{body['metadata']['name']}/output"
        assert staging.exists(f"{body['metadata']['name']}/output")
    assert calls == [("care", "W", "R")] * 2 + [("fairness", "W", "R")] * 2  # both ranks of each job ran
    staged = [k for k in staging._list("trainjobs/inputs/") if k.endswith("_manifest.json")]
    assert len(staged) == 2  # base and rewards, staged once for both agents


def test_node_entry_refuses_unknown_stages_and_bad_uris():
    from cmva import trainjob_node

    with pytest.raises(ValueError, match="train-rewards.*does not run in a TrainJob"):
        trainjob_node.run("train-rewards", {"kwargs": {}, "inputs": {}, "output": "s3://b/x"}, 0)
    with pytest.raises(ValueError, match="not an s3:// artifact URI"):
        trainjob_node._split("/local/path")
    with pytest.raises(SystemExit, match="usage"):
        trainjob_node.main(["train-agent"])
