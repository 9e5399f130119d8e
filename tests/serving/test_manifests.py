"""manifests/: every overlay rendered by the real kustomize (`kubectl kustomize`); KServe kinds validate against the
CRD schemas in ../shared/schemas (skipped, saying why, when absent), built-in kinds with kubernetes-validate;
restricted pod security, default-deny NetworkPolicies, probes and replicas, namespace portability, no secrets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cmva.manifests import MANIFESTS, build

CRDS = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "kserve"
OVERLAYS = ["separate", "packed", "gpu"]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize v5) is not on PATH")


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _crd_schema(kind_file: str, version: str) -> dict:
    if not CRDS.is_dir():  # a fresh clone has nothing beside it; CI lays ../shared beside the checkout
        pytest.skip(f"KServe CRD schemas not found at {CRDS} (../shared/schemas/kserve beside the checkout)")
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def _pod_specs(doc: dict) -> list[dict]:
    """The pod specs an object creates: a Deployment's template, an InferenceService's components."""
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "InferenceService":
        return [doc["spec"][c] for c in ("predictor", "transformer") if c in doc["spec"]]
    return []


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize v5) is not on PATH")
    return request.param, kustomize(MANIFESTS / "overlays" / request.param)


def test_core_objects_validate(rendered):
    overlay, docs = rendered
    kinds = {d["kind"] for d in docs}
    assert {"InferenceService", "Secret", "ServiceAccount", "Deployment", "Service", "PersistentVolumeClaim",
            "NetworkPolicy", "PodDisruptionBudget", "Namespace"} <= kinds  # fmt: skip
    assert not kinds & {"Role", "RoleBinding", "ClusterRole"}  # the serving pods call no Kubernetes API
    for d in docs:
        if not d["apiVersion"].startswith("serving.kserve.io/"):
            kubernetes_validate.validate(d, "1.30.0", strict=True)
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "cmva"


def test_inference_services_validate_against_kserve_crd(rendered):
    _, docs = rendered
    schema = _crd_schema("serving.kserve.io_inferenceservices.yaml", "v1beta1")
    for d in docs:
        if d["kind"] == "InferenceService":
            jsonschema.Draft7Validator(schema).validate(d)


def test_renderer_parity_with_kustomize(rendered):
    """`cmva manifests` (its own renderer, the subset of kustomize manifests/ uses) gives kustomize's objects."""
    overlay, docs = rendered

    def key(d):
        return d["kind"], d["metadata"]["name"]

    assert sorted(build(MANIFESTS / "overlays" / overlay), key=key) == sorted(docs, key=key)


def test_restricted_pod_security_everywhere(rendered):
    _, docs = rendered
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [p for d in docs for p in _pod_specs(d)]
    assert len(pods) >= 3
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        writable = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts and mounts["/tmp"] in writable, c["name"]  # caches go to emptyDirs


def test_serving_runs_as_kserve_expects(rendered):
    overlay, docs = rendered
    for d in (d for d in docs if d["kind"] == "InferenceService"):
        assert d["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert d["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
        for pod in _pod_specs(d):
            c = pod["containers"][0]
            assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c)
            assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        if "transformer" in d["spec"]:
            t = d["spec"]["transformer"]
            assert t["minReplicas"] >= 2 and t["maxReplicas"] > t["minReplicas"] and t["scaleMetric"] == "cpu"
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == {"cmva.io/role": "transformer"}
    if overlay == "gpu":
        pred = next(d for d in docs if d["kind"] == "InferenceService")["spec"]["predictor"]
        assert (
            pred["containers"][0]["image"].endswith("-cuda")
            and pred["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        )
        assert pred["nodeSelector"] == {"cmva.io/pool": "gpu"} and pred["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_network_policies_default_deny_and_isolate(rendered):
    _, docs = rendered
    pols = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert pols["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    from_transformer = [{"podSelector": {"matchLabels": {"cmva.io/role": "transformer"}}}]
    for name, role in (("agents-from-transformer-only", "agent"), ("aggregator-from-transformer-only", "aggregator")):
        assert pols[name]["podSelector"]["matchLabels"] == {"cmva.io/role": role}
        assert pols[name]["ingress"][0]["from"] == from_transformer
    minio = pols["minio-api-from-pipelines-and-serving"]
    assert [p["port"] for r in minio["ingress"] for p in r["ports"]] == [9000]  # the console port is closed
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "minio")
    assert [p["port"] for p in svc["spec"]["ports"]] == [9000]
    isvcs = [d for d in docs if d["kind"] == "InferenceService"]
    roles = {p["labels"]["cmva.io/role"] for d in isvcs for p in _pod_specs(d)}
    assert roles <= {"agent", "aggregator", "transformer"} and "transformer" in roles


def test_topologies():
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize v5) is not on PATH")
    sep = [d for d in kustomize(MANIFESTS / "overlays" / "separate") if d["kind"] == "InferenceService"]
    assert {d["metadata"]["name"] for d in sep} == {f"cmva-{v}" for v in ("care", "fairness", "loyalty", "authority", "sanctity")} | {"cmva"}  # fmt: skip
    agg = next(d for d in sep if d["metadata"]["name"] == "cmva")
    args = agg["spec"]["transformer"]["containers"][0]["args"]
    assert "care=http://cmva-care-predictor" in args[args.index("--agents") + 1].split(",")
    assert all(d["spec"]["predictor"]["labels"]["cmva.io/role"] == "agent" for d in sep if d is not agg)
    packed = [d for d in kustomize(MANIFESTS / "overlays" / "packed") if d["kind"] == "InferenceService"]
    assert len(packed) == 1 and "--with_aggregator" in packed[0]["spec"]["predictor"]["containers"][0]["args"]


@needs_kubectl
def test_namespace_override_yields_a_working_set(tmp_path):
    """Another namespace: every object moves, and nothing still points at a `*.cmva.svc` address."""
    for overlay in ("separate", "packed"):
        k = tmp_path / overlay
        k.mkdir()
        target = os.path.relpath(MANIFESTS / "overlays" / overlay, k)
        (k / "kustomization.yaml").write_text(f"namespace: ml-team\nresources:\n  - {target}\n")
        docs = kustomize(k)
        assert all(d["metadata"].get("namespace") == "ml-team" for d in docs if d["kind"] != "Namespace")
        assert ".cmva.svc" not in json.dumps(docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_literal_secret_values(overlay):
    docs = build(MANIFESTS / "overlays" / overlay)
    for d in docs:
        if d["kind"] == "Secret":
            assert not d.get("data") and not d.get("stringData"), (
                "Secrets carry annotations only; keys are created out of band"
            )
            assert d["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
    text = json.dumps(docs).lower()
    for needle in ("minioadmin", 'password": "', 'aws_secret_access_key": "'):
        assert needle not in text
    for d in docs:  # credentials only by reference
        for pod in _pod_specs(d):
            for c in pod["containers"]:
                for e in c.get("env", []):
                    if "KEY" in e["name"] or "PASSWORD" in e["name"] or "USER" in e["name"]:
                        assert "valueFrom" in e and "value" not in e, e["name"]


def test_renderer_rejects_unknown_kustomize_features(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(ValueError, match="commonLabels"):
        build(tmp_path)
