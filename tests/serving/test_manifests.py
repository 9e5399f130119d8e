"""manifests/: every overlay rendered by the real kustomize (`kubectl kustomize`) and checked as a cluster would.

KServe (and any other custom) kinds validate against the CRD schemas in ../shared/schemas (those tests skip, saying
why, on a fresh clone with nothing beside it); built-in kinds validate with kubernetes-validate. Then: restricted
Pod Security, NetworkPolicies (evaluated connection by connection), credentials, probes and scaling, the serving
channel, namespace portability, the MinIO users Job's script (run under /bin/sh against a stand-in `mc`).

gpu-vllm runs its predictors on KServe's Hugging Face runtime (vLLM), and three rules cannot hold there as written,
each relaxed for that overlay only, where it is asserted: the channel reaches them as `storageUri` (KServe's storage
initializer, an init container KServe injects at admission, not in these manifests and not hardened by us), its S3
keys attached to their ServiceAccount; their image is the runtime's; the transformer reads the channel too (the
aggregator's ranking), with the read-only serving keys and a NetworkPolicy to MinIO.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
# CRD JSON schemas (KServe, Kubeflow Trainer): CMVA_CRD_SCHEMAS, else the CI layout beside the checkout
SCHEMAS = Path(os.environ.get("CMVA_CRD_SCHEMAS", ROOT.parent / "shared" / "schemas"))
OVERLAYS = ["separate", "packed", "gpu", "gpu-vllm"]
VLLM = "gpu-vllm"  # its predictors run KServe's Hugging Face runtime (vLLM): what differs is asserted where it does
VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]
KUBECTL = shutil.which("kubectl")
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]  # the oldest cluster supported, the newest known
SECRETS = {"minio-root", "cmva-s3-pipeline", "cmva-s3-serving"}  # created by the operator, never rendered

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize v5) is not on PATH")


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize v5) is not on PATH")
    return request.param, kustomize(MANIFESTS / "overlays" / request.param)


def wrap(tmp_path: Path, overlay: str, namespace: str) -> list[dict]:
    """An operator's own overlay on top of ours that only moves everything to another namespace."""
    k = tmp_path / f"{overlay}-{namespace}"
    k.mkdir()
    target = os.path.relpath(MANIFESTS / "overlays" / overlay, k)
    (k / "kustomization.yaml").write_text(f"namespace: {namespace}\nresources:\n  - {target}\n")
    return kustomize(k)


# --- what the objects run -------------------------------------------------------------------------------------


def pods(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, pod labels, pod spec) of every pod template: Deployments, Jobs, InferenceService components."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            t = d["spec"]["template"]
            out.append((d["metadata"]["name"], t["metadata"].get("labels", {}), t["spec"]))
        elif d["kind"] == "InferenceService":
            for comp in ("predictor", "transformer"):
                if comp in d["spec"]:
                    out.append((f"{d['metadata']['name']}-{comp}", d["spec"][comp].get("labels", {}), d["spec"][comp]))
    return out


def containers(pod: dict) -> list[dict]:
    """A pod's containers; a predictor on a KServe runtime (`model`: gpu-vllm's vLLM) has its one container there."""
    return pod.get("containers", []) + ([pod["model"]] if "model" in pod else [])


def on_runtime(pod: dict) -> bool:
    """A predictor served by a KServe ServingRuntime (gpu-vllm: the Hugging Face runtime), not a cmva image."""
    return "model" in pod


def servers(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """The long-running pods (not the Job)."""
    return [p for p in pods(docs) if "restartPolicy" not in p[2]]


def role(labels: dict) -> str:
    return labels.get("cmva.io/role") or labels["app.kubernetes.io/name"]


def secret_refs(pod: dict) -> set[str]:
    refs = set()
    for c in containers(pod) + pod.get("initContainers", []):
        for e in c.get("env", []):
            if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                refs.add(ref["name"])
        refs |= {s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s}
    refs |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    return refs


# --- validation ------------------------------------------------------------------------------------------------


def _strict(schema):
    """A CRD schema as `kubectl apply` (strict field validation) enforces it: unknown fields are errors."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str, str], jsonschema.Draft7Validator]:
    """(group, version, kind) → validator, from every CustomResourceDefinition under ../shared/schemas."""
    if not SCHEMAS.is_dir():
        pytest.skip(
            f"CRD schemas not found at {SCHEMAS}: set CMVA_CRD_SCHEMAS to a directory of CRD JSON schemas (CI has one)"
        )
    out = {}
    for f in sorted(SCHEMAS.rglob("*.yaml")):
        for crd in yaml.safe_load_all(f.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                for v in crd["spec"]["versions"]:
                    key = (crd["spec"]["group"], v["name"], crd["spec"]["names"]["kind"])
                    out[key] = jsonschema.Draft7Validator(_strict(v["schema"]["openAPIV3Schema"]))
    assert ("serving.kserve.io", "v1beta1", "InferenceService") in out
    return out


def is_builtin(d: dict) -> bool:
    group = d["apiVersion"].rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or group in ("apps", "batch", "policy", "autoscaling")


def test_core_objects_validate(rendered):
    overlay, docs = rendered
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PersistentVolumeClaim", "Job", "NetworkPolicy",
            "PodDisruptionBudget", "InferenceService"} <= kinds  # fmt: skip
    for d in docs:
        if is_builtin(d):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(d, version, strict=True)
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "cmva", d["metadata"]["name"]


def test_custom_resources_validate_against_their_crds(rendered, crd_validators):
    _, docs = rendered
    custom = [d for d in docs if not is_builtin(d)]
    assert {d["kind"] for d in custom} == {"InferenceService"}
    for d in custom:
        group, _, version = d["apiVersion"].rpartition("/")
        key = (group, version, d["kind"])
        assert key in crd_validators, f"no CRD for {key} under {SCHEMAS}"
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validators[key].iter_errors(d)]
        assert not errors, (d["metadata"]["name"], errors)


def test_the_validators_reject_what_a_cluster_rejects(crd_validators):
    """The checks above can fail: a misspelled field or a value outside an enum is caught, like `kubectl apply`."""
    isvc = yaml.safe_load((MANIFESTS / "overlays" / "packed" / "inferenceservices.yaml").read_text())
    validator = crd_validators[("serving.kserve.io", "v1beta1", "InferenceService")]
    assert not list(validator.iter_errors(isvc))
    for mutate in (
        lambda d: d["spec"]["transformer"].update(scaleMetric="gpu"),
        lambda d: d["spec"]["transformer"].update(minReplica=2),
        lambda d: d["spec"]["predictor"]["containers"][0].update(readinesProbe={}),
    ):
        bad = copy.deepcopy(isvc)
        mutate(bad)
        assert list(validator.iter_errors(bad))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "x", "imagee": "y"}]}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


# --- pod security ----------------------------------------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}  # fmt: skip


def test_restricted_pod_security_everywhere(rendered):
    _, docs = rendered
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    found = pods(docs)
    assert {role(labels) for _, labels, _ in found} >= {"minio", "minio-setup", "agent", "transformer"}
    for name, _, pod in found:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod.get("automountServiceAccountToken") is False, name  # no pod calls the Kubernetes API
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        for v in pod.get("volumes", []):
            assert set(v) - {"name"} <= RESTRICTED_VOLUMES, (name, v)
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in containers(pod) + pod.get("initContainers", []):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}, name
            assert csc["readOnlyRootFilesystem"] is True and not csc.get("privileged"), name
            assert csc.get("runAsNonRoot", True) is True and csc.get("runAsUser", 1) != 0, name
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, f"{name}: /tmp must be a writable emptyDir"
            if c.get("image", "").startswith("ghcr.io/cmva/cmva-serve"):  # HOME=/home/cmva: HF, torch, cmva caches
                assert mounts.get("/home/cmva/.cache") in empty_dirs, f"{name}: caches must go to an emptyDir"


# --- serving the way KServe and the cluster expect ---------------------------------------------------------------


def test_probes_replicas_autoscaling_and_scraping(rendered):
    overlay, docs = rendered
    for name, _, pod in servers(docs):
        for c in containers(pod):
            ports = {p["containerPort"] for p in c["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert c[probe]["httpGet"]["port"] in ports, (name, probe)
            assert c["resources"]["requests"] and c["resources"]["limits"], name
    isvcs = [d for d in docs if d["kind"] == "InferenceService"]
    for d in isvcs:
        ann = d["metadata"]["annotations"]
        assert ann["serving.kserve.io/deploymentMode"] == "Standard"  # "RawDeployment" is its deprecated alias
        assert ann["serving.kserve.io/enable-prometheus-scraping"] == "true"
        for comp in ("predictor", "transformer"):
            if comp in d["spec"]:
                spec = d["spec"][comp]
                c = containers(spec)[0]
                assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
                assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
                assert spec["annotations"] == {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "8080",
                    "prometheus.io/path": "/metrics",  # KServe's model server serves it on the HTTP port
                }
                assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    transformers = [d["spec"]["transformer"] for d in isvcs if "transformer" in d["spec"]]
    assert len(transformers) == 1
    t = transformers[0]
    assert t["minReplicas"] >= 2 and t["maxReplicas"] > t["minReplicas"]
    assert (t["scaleMetric"], t["scaleMetricType"]) == ("cpu", "Utilization") and 0 < t["scaleTarget"] < 100
    assert t["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == t["labels"]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == t["labels"] == {"cmva.io/role": "transformer"}
    assert pdb["spec"]["minAvailable"] < t["minReplicas"]  # a node drain can always evict one
    if overlay == "gpu":
        pred = isvcs[0]["spec"]["predictor"]
        c = pred["containers"][0]
        assert c["image"].endswith("-cuda") and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pred["nodeSelector"] == {"cmva.io/pool": "gpu"} and pred["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert t["containers"][0]["image"].endswith("-cpu")  # the transformer needs no GPU


def test_images_are_the_tagged_serve_variants(rendered):
    _, docs = rendered
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for d in (d for d in docs if d["kind"] == "InferenceService"):
        for comp in ("predictor", "transformer"):
            if comp in d["spec"]:
                if on_runtime(d["spec"][comp]):  # gpu-vllm: the image is the runtime's (test_gpu_vllm_overlay)
                    assert "image" not in d["spec"][comp]["model"]
                    continue
                image = d["spec"][comp]["containers"][0]["image"]
                assert re.fullmatch(rf"ghcr\.io/cmva/cmva-serve:{re.escape(version)}-(cpu|cuda)", image), image
                args = d["spec"][comp]["containers"][0]["args"]
                assert args[0] in ("agent", "aggregator", "transformer")  # the image's `python -m serving ROLE`


def test_topologies():
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize v5) is not on PATH")
    sep = [d for d in kustomize(MANIFESTS / "overlays" / "separate") if d["kind"] == "InferenceService"]
    names = {d["metadata"]["name"] for d in sep}
    assert names == {f"cmva-{v}" for v in VALUES} | {"cmva"}
    agg = next(d for d in sep if d["metadata"]["name"] == "cmva")
    assert agg["spec"]["predictor"]["labels"] == {"cmva.io/role": "aggregator"}
    args = agg["spec"]["transformer"]["containers"][0]["args"]
    agents = dict(a.split("=", 1) for a in args[args.index("--agents") + 1].split(","))
    assert set(agents) == set(VALUES)
    for value, url in agents.items():  # KServe's Standard mode names each predictor's Service <isvc>-predictor
        assert url == f"http://cmva-{value}-predictor" and f"cmva-{value}" in names
    assert args[args.index("--predictor_host") + 1] == "cmva-predictor"
    for d in sep:
        if d is not agg:
            p = d["spec"]["predictor"]
            assert p["labels"] == {"cmva.io/role": "agent"} and "transformer" not in d["spec"]
            c = p["containers"][0]["args"]
            assert c[c.index("--values") + 1] == d["metadata"]["name"].removeprefix("cmva-")
    packed = [d for d in kustomize(MANIFESTS / "overlays" / "packed") if d["kind"] == "InferenceService"]
    assert len(packed) == 1 and "--with_aggregator" in packed[0]["spec"]["predictor"]["containers"][0]["args"]


def _recipe_lora_ranks(part: str) -> list[int]:
    return [
        yaml.safe_load(f.read_text())[part]["lora"]["r"] for f in sorted((ROOT / "cmva" / "recipes").glob("*.yaml"))
    ]


def _flag(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"{name}="))


@needs_kubectl
def test_gpu_vllm_overlay(crd_validators):
    """gpu-vllm: the agents and the aggregator on KServe's Hugging Face runtime with vLLM and LoRA, one GPU each, the
    adapters named as the transformer asks for them (`model`), cmva's transformer in the OpenAI protocol."""
    isvcs = {
        d["metadata"]["name"]: d for d in kustomize(MANIFESTS / "overlays" / VLLM) if d["kind"] == "InferenceService"
    }
    assert set(isvcs) == {"cmva-agents", "cmva"}
    runtime = yaml.safe_load((SCHEMAS / "kserve" / "example-kserve-huggingfaceserver-runtime.yaml").read_text())
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    served = {}
    for name, part in (("cmva-agents", "agent"), ("cmva", "aggregator")):
        pred = isvcs[name]["spec"]["predictor"]
        m = pred["model"]
        assert m["modelFormat"]["name"] in formats and m["runtime"] == runtime["metadata"]["name"]
        assert m["resources"]["limits"]["nvidia.com/gpu"] == m["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert pred["nodeSelector"] == {"cmva.io/pool": "gpu"} and pred["tolerations"][0]["key"] == "nvidia.com/gpu"
        args = m["args"]
        assert {"--enable-lora", "--backend=vllm", "--model_dir=/mnt/models/base"} <= set(args)
        assert int(_flag(args, "--max-lora-rank")) == max(_recipe_lora_ranks(part))  # every recipe's adapters load
        modules = dict(a.split("=", 1) for a in args[args.index("--lora-modules") + 1 :])
        assert int(_flag(args, "--max-loras")) == len(modules)  # all of them in one batch
        served[name] = modules
    assert served["cmva-agents"] == {v: f"/mnt/models/agents/{v}" for v in VALUES}
    assert served["cmva"] == {"aggregator": "/mnt/models/aggregator"}
    t = isvcs["cmva"]["spec"]["transformer"]["containers"][0]["args"]
    assert t[t.index("--predictor_api") + 1] == "openai" and t[t.index("--aggregator_adapter") + 1] == "aggregator"
    assert t[t.index("--agents") + 1] == "packed=http://cmva-agents-predictor"
    assert t[t.index("--predictor_host") + 1] == "cmva-predictor"


def _channel() -> str:
    cm = yaml.safe_load((MANIFESTS / "components" / "serving-channel" / "channel.yaml").read_text())
    return cm["data"]["ARTIFACTS_URI"]


def _predictor_artifacts(docs: list[dict]) -> list[str]:
    """The artifacts every predictor serves (and gpu-vllm's transformer reads: the aggregator's ranking)."""
    out = []
    for d in (d for d in docs if d["kind"] == "InferenceService"):
        pred = d["spec"]["predictor"]
        if on_runtime(pred):  # gpu-vllm: fetched to /mnt/models by KServe's storage initializer
            out.append(pred["model"]["storageUri"])
        else:
            out.append(_artifacts_arg(pred["containers"][0]))
        if "transformer" in d["spec"] and "--artifacts" in d["spec"]["transformer"]["containers"][0]["args"]:
            out.append(_artifacts_arg(d["spec"]["transformer"]["containers"][0]))
    return out


def _artifacts_arg(c: dict) -> str:
    assert c["args"][c["args"].index("--artifacts") + 1] == "$(CMVA_ARTIFACTS)"  # expanded by the kubelet
    return next(e["value"] for e in c["env"] if e["name"] == "CMVA_ARTIFACTS")


def test_serving_channel_is_set_in_one_place(rendered, tmp_path):
    """Every predictor serves the channel of components/serving-channel; changing it there changes them all."""
    overlay, docs = rendered
    assert _channel().startswith("s3://")
    assert set(_predictor_artifacts(docs)) == {_channel()}
    assert "cmva-serving-channel" not in {d["metadata"]["name"] for d in docs}  # local to kustomize
    for _, _, pod in pods(docs):  # no KServe storage initializer (an injected, unhardened init container)
        if on_runtime(pod):  # gpu-vllm: the runtime gets the channel from KServe's storage initializer (the exception)
            continue
        for c in pod["containers"]:
            assert "STORAGE_URI" not in {e["name"] for e in c.get("env", [])}
        assert "storageUri" not in json.dumps(pod) and "storageUris" not in pod
    copy_ = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy_)
    cm = copy_ / "components" / "serving-channel" / "channel.yaml"
    cm.write_text(cm.read_text().replace(_channel(), "s3://cmva/serving/staging"))
    assert set(_predictor_artifacts(kustomize(copy_ / "overlays" / overlay))) == {"s3://cmva/serving/staging"}


# --- credentials ------------------------------------------------------------------------------------------------


def test_credentials_least_privilege_and_nothing_applied_twice(rendered):
    overlay, docs = rendered
    kinds = {d["kind"] for d in docs}
    # The Secrets are the operator's, created once: `kubectl apply -k` has nothing of theirs to overwrite.
    assert "Secret" not in kinds
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}  # nothing calls the API
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    refs = {}
    for _, labels, pod in pods(docs):  # by the pod, or (KServe's storage initializer) by its ServiceAccount
        attached = {s["name"] for s in sas.get(pod.get("serviceAccountName"), {}).get("secrets", [])}
        refs.setdefault(role(labels), set()).update(secret_refs(pod) | attached)
    assert refs.pop("minio") == {"minio-root"}
    assert refs.pop("minio-setup") == SECRETS  # the only other user of the root credentials
    # gpu-vllm's transformer reads the aggregator's ranking from the channel: the read-only serving user
    assert refs.pop("transformer") == ({"cmva-s3-serving"} if overlay == VLLM else set())
    for r, used in refs.items():  # the predictors: read-only serving user only
        assert r in ("agent", "aggregator") and used == {"cmva-s3-serving"}, r
    for _, _, pod in pods(docs):  # credentials only by reference, never a literal
        for c in containers(pod):
            for e in c.get("env", []):
                if re.search(r"KEY|PASSWORD|USER|TOKEN", e["name"]):
                    assert "valueFrom" in e and "value" not in e, e["name"]
    used = {p.get("serviceAccountName") for _, _, p in pods(docs)} - {None}
    assert set(sas) == used == ({"cmva-serving", "cmva-vllm"} if overlay == VLLM else {"cmva-serving"})  # none unused
    if overlay == VLLM:  # the storage initializer's S3 keys: the read-only serving user, and no API token
        assert sas["cmva-vllm"]["secrets"] == [{"name": "cmva-s3-serving"}]
        assert sas["cmva-vllm"]["automountServiceAccountToken"] is False
    assert sas["cmva-serving"]["automountServiceAccountToken"] is False and "secrets" not in sas["cmva-serving"]
    text = json.dumps(docs).lower()
    assert "minioadmin" not in text


def test_readme_creates_every_secret_the_manifests_use():
    from cmva.config import PlatformCfg

    readme = (ROOT / "README.md").read_text()
    for name in SECRETS | {PlatformCfg().s3_secret}:  # and the pipeline's copy in the Kubeflow profile namespace
        assert re.search(rf"create secret generic {re.escape(name)}\b", readme), name


def _job_script() -> tuple[str, dict]:
    job = yaml.safe_load((MANIFESTS / "base" / "minio-users.yaml").read_text())
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"].startswith("quay.io/minio/mc:") and c["command"] == ["/bin/sh", "-c"]
    return c["args"][0], {e["name"]: e.get("value") for e in c["env"]}


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs a POSIX /bin/sh")
def test_minio_users_job_creates_scoped_users_idempotently(tmp_path):
    """The Job's script, run twice against a stand-in `mc` that records its calls (and, like MinIO, refuses to
    attach a policy twice): two users, a read-write and a read-only policy on the bucket only, root never shared."""
    script, env = _job_script()
    assert env["MINIO_URL"] == "http://minio:9000" and env["BUCKET"] == "cmva"
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "mc"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in *"policy attach"*)\n'
        f'  [ -f "{tmp_path}/attached-$5" ] && {{ echo "mc: <ERROR> The specified policy change is already in effect." >&2; exit 1; }}\n'
        f'  touch "{tmp_path}/attached-$5";;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    run_env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "MINIO_URL": env["MINIO_URL"],
        "BUCKET": env["BUCKET"],
        "MINIO_ROOT_USER": "root",
        "MINIO_ROOT_PASSWORD": "root-pw",
        "PIPELINE_ACCESS_KEY": "cmva-pipeline",
        "PIPELINE_SECRET_KEY": "pipeline-pw",
        "SERVING_ACCESS_KEY": "cmva-serving",
        "SERVING_SECRET_KEY": "serving-pw",
    }
    for _ in range(2):  # re-running (a re-apply, a key rotation) succeeds
        r = subprocess.run(["/bin/sh", "-c", script], env=run_env, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls.count("alias set cmva http://minio:9000 root root-pw") == 2
    assert "mb --ignore-existing cmva/cmva" in calls
    assert "admin user add cmva cmva-pipeline pipeline-pw" in calls
    assert "admin user add cmva cmva-serving serving-pw" in calls
    assert "admin policy attach cmva cmva-pipeline --user cmva-pipeline" in calls
    assert "admin policy attach cmva cmva-serving --user cmva-serving" in calls
    policies = {}
    for call in calls:
        if call.startswith("admin policy create cmva "):
            _, _, _, _, name, path = call.split()
            policies[name] = json.loads(Path(path).read_text())
    assert set(policies) == {"cmva-pipeline", "cmva-serving"}
    for name, policy in policies.items():
        resources = {r for s in policy["Statement"] for r in s["Resource"]}
        assert resources == {"arn:aws:s3:::cmva", "arn:aws:s3:::cmva/*"}, name  # this bucket only
        assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    actions = {n: {a for s in p["Statement"] for a in s["Action"]} for n, p in policies.items()}
    assert {"s3:PutObject", "s3:DeleteObject", "s3:GetObject", "s3:ListBucket"} <= actions["cmva-pipeline"]
    assert actions["cmva-serving"] == {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}  # read-only
    for bad in (
        {"SERVING_ACCESS_KEY": "root"},
        {"PIPELINE_ACCESS_KEY": "root"},
        {"SERVING_ACCESS_KEY": "cmva-pipeline"},
    ):
        r = subprocess.run(["/bin/sh", "-c", script], env=run_env | bad, capture_output=True, text=True)
        assert r.returncode != 0, bad


# --- network policies --------------------------------------------------------------------------------------------


def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        have = e["key"] in labels
        ok = {
            "In": have and labels.get(e["key"]) in e.get("values", []),
            "NotIn": not have or labels[e["key"]] not in e.get("values", []),
            "Exists": have,
            "DoesNotExist": not have,
        }[e["operator"]]
        if not ok:
            return False
    return True


class Endpoint:
    def __init__(self, ns: str, ns_labels: dict, labels: dict, name: str = ""):
        self.ns, self.ns_labels, self.labels, self.name = (
            ns,
            ns_labels | {"kubernetes.io/metadata.name": ns},
            labels,
            name,
        )


def _allows(docs, direction: str, pod: Endpoint, peer: Endpoint, port: int, protocol: str) -> bool:
    """Whether the policies of `pod`'s namespace let `peer` in (Ingress) or let `pod` reach `peer` (Egress)."""
    policies = [
        d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["namespace"] == pod.ns
        and direction in d["spec"]["policyTypes"]
        and _selects(d["spec"]["podSelector"], pod.labels)
    ]
    if not policies:
        return True  # not isolated in that direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for spec in policies:
        for rule in spec.get(key, []):
            ports = rule.get("ports")
            port_ok = not ports or any(
                p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
            )
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                "ipBlock" not in q
                and (
                    _selects(q["namespaceSelector"], peer.ns_labels) if "namespaceSelector" in q else peer.ns == pod.ns
                )
                and ("podSelector" not in q or _selects(q["podSelector"], peer.labels))
                for q in peers
            )
            if port_ok and peer_ok:
                return True
    return False


def connects(docs, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Both ends' policies agree (a side outside the rendered namespace has none of ours)."""
    ours = {d["metadata"]["namespace"] for d in docs if d["kind"] == "NetworkPolicy"}
    ok_out = src.ns not in ours or _allows(docs, "Egress", src, dst, port, protocol)
    ok_in = dst.ns not in ours or _allows(docs, "Ingress", dst, src, port, protocol)
    return ok_out and ok_in


def _endpoints(docs) -> list[tuple[Endpoint, set[int]]]:
    ns = next(d for d in docs if d["kind"] == "Namespace")["metadata"]
    return [
        (Endpoint(ns["name"], ns.get("labels", {}), labels, role(labels)),
         {p["containerPort"] for c in containers(pod) for p in c.get("ports", [])})
        for _, labels, pod in pods(docs)
    ]  # fmt: skip


EXPECTED = {("transformer", "agent", 8080), ("transformer", "aggregator", 8080), ("agent", "minio", 9000),
            ("aggregator", "minio", 9000), ("minio-setup", "minio", 9000)}  # fmt: skip


def _assert_isolation(docs, expected: set = EXPECTED):
    from cmva.config import PlatformCfg

    eps = _endpoints(docs)
    allowed = {
        (src.name, dst.name, port)
        for src, _ in eps
        for dst, ports in eps
        for port in ports | {9001}  # 9001: MinIO's usual console port, closed
        if src is not dst and connects(docs, src, dst, port)
    }
    roles = {e.name for e, _ in eps}
    assert allowed == {c for c in expected if {c[0], c[1]} <= roles}
    ns = eps[0][0].ns
    by_role = {e.name: e for e, _ in eps}
    stranger = Endpoint(ns, {}, {"app": "debug"}, "debug")  # any other pod of the namespace: denied both ways
    for dst, ports in eps:  # each side on its own too: ingress does not lean on the peers' egress rules
        admitted = {src.name for src, _ in eps + [(stranger, set())] if src is not dst
                    and any(_allows(docs, "Ingress", dst, src, p, "TCP") for p in ports)}  # fmt: skip
        want = {c[0] for c in expected if c[1] == dst.name} & roles
        if dst.name == "transformer":  # the public endpoint
            want = (roles | {"debug"}) - {dst.name}
        assert admitted == want, dst.name
    client = Endpoint("ingress-nginx", {}, {"app": "ingress"})
    prometheus = Endpoint("monitoring", {"cmva.io/monitoring": "true"}, {"app": "prometheus"})
    kfp = {"pipelines.kubeflow.org/v2_component": "true"}
    profile = {"cmva.io/minio-access": "true"}
    pipeline = Endpoint("kubeflow-alice", profile, kfp | PlatformCfg().pod_labels)  # a cmva pipeline step
    notebook = Endpoint("kubeflow-alice", profile, {"notebook-name": "x"})
    other_kfp = Endpoint("kubeflow-alice", profile, kfp)  # another pipeline's step
    other_pipeline = Endpoint("kubeflow-bob", {}, kfp | PlatformCfg().pod_labels)  # an unlabelled namespace
    dns = Endpoint("kube-system", {}, {"k8s-app": "kube-dns"})
    assert connects(docs, client, by_role["transformer"], 8080)
    assert not connects(docs, client, by_role["transformer"], 9000)
    for r in ("agent", "aggregator", "minio"):
        if r in by_role:
            port = 9000 if r == "minio" else 8080
            assert not connects(docs, client, by_role[r], port), r
            assert not connects(docs, stranger, by_role[r], port), r
    for r in ("agent", "aggregator", "transformer"):
        if r in by_role:
            assert connects(docs, prometheus, by_role[r], 8080), r
    assert not connects(docs, prometheus, by_role["minio"], 9000)
    assert connects(docs, pipeline, by_role["minio"], 9000)
    assert not connects(docs, pipeline, by_role["minio"], 9001)
    assert not connects(docs, notebook, by_role["minio"], 9000)
    assert not connects(docs, other_kfp, by_role["minio"], 9000)
    assert not connects(docs, other_pipeline, by_role["minio"], 9000)
    assert not connects(docs, pipeline, by_role["agent"], 8080)
    for e, _ in eps + [(stranger, set())]:  # egress: DNS, and nothing outside the namespace
        assert connects(docs, e, dns, 53, "UDP") and connects(docs, e, dns, 53, "TCP"), e.name
        assert not connects(docs, e, dns, 80), e.name
        for port in (443, 8080, 9000):
            assert not connects(docs, e, Endpoint("elsewhere", {}, {}), port), (e.name, port)


def test_network_policies_default_deny_and_isolate(rendered):
    overlay, docs = rendered
    pols = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "minio")
    assert [p["port"] for p in svc["spec"]["ports"]] == [9000]  # the console is not exposed
    minio = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "minio")
    assert {"name": "MINIO_BROWSER", "value": "off"} in minio["spec"]["template"]["spec"]["containers"][0]["env"]
    # gpu-vllm's transformer reads the aggregator's ranking from MinIO (overlays/gpu-vllm/networkpolicy.yaml)
    _assert_isolation(docs, EXPECTED | {("transformer", "minio", 9000)} if overlay == VLLM else EXPECTED)


# --- namespace portability --------------------------------------------------------------------------------------


def _urls(docs) -> list[str]:
    out = []
    for _, _, pod in pods(docs):
        for c in containers(pod):
            words = c.get("args", []) + [e["value"] for e in c.get("env", []) if "value" in e]
            out += [u for w in words for u in re.findall(r"https?://[^,\s]+", w)]
    return out


@needs_kubectl
@pytest.mark.parametrize("overlay", ["separate", "packed"])
def test_namespace_override_yields_a_working_set(overlay, tmp_path):
    """Another namespace: every object moves, every address stays namespace-relative, the policies still hold."""
    docs = wrap(tmp_path, overlay, "ml-team")
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["name"] == "ml-team"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"]["namespace"] == "ml-team" for d in docs if d["kind"] != "Namespace")
    assert ".svc" not in json.dumps(docs) and "cmva.svc" not in json.dumps(docs)
    urls = _urls(docs)
    assert urls and all("." not in u.split("//", 1)[1].split("/")[0].split(":")[0] for u in urls), urls
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    services |= {f"{d['metadata']['name']}-predictor" for d in docs if d["kind"] == "InferenceService"}
    for u in urls:  # each bare host is a Service of this set (KServe makes <isvc>-predictor)
        assert u.split("//", 1)[1].split(":")[0].split("/")[0] in services, u
    _assert_isolation(docs)
