"""Kubeflow Trainer v2 TrainJobs for the training stages of a multi-node platform (`training: {mode: trainjob}`).

A KFP launcher task (`cmva.kfp_components.train_agent_trainjob`, `train_aggregator_trainjob`) runs `launch_stage`:

    launcher ──publish inputs──► s3://<staging>/inputs/<digest of the KFP artifact URI>/   (once per artifact)
             ──create TrainJob─► every node: torchrun -m cmva.trainjob_node <stage> <spec JSON>
                                  (the same `cmva.kfp_ops` stage function; rank 0 publishes its output)
             ◄─node 0's log, streamed into the task's log; the task fails when the TrainJob fails
             ◄─get output─────── s3://<staging>/<job>/output/ (manifest-checked) → KFP output

The objects are plain dicts of `trainer.kubeflow.org/v1alpha1`, checked in tests against the Trainer CRDs; the
runtime they reference is the ClusterTrainingRuntime in `manifests/trainer/`.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NODE_ENTRY = ["torchrun", "-m", "cmva.trainjob_node"]  # torchrun reads the PET_* env the torch runtime injects
NODE_JOB = "node"  # the runtime's replicated job (and container) that runs the trainer
PATCH_MANAGER = "cmva.io/launcher"
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class TrainJobFailed(RuntimeError):
    """The TrainJob reached its Failed condition (or its deadline); the message names the job and the reason."""


def resources_per_node(p, stage: str, gpu: bool) -> dict:
    """`spec.trainer.resourcesPerNode`: the stage's CPU and memory, and the accelerator on GPU stages."""
    r = p.stage(stage)
    res = {"requests": {"cpu": r.cpu_request, "memory": r.memory_request}, "limits": {"memory": r.memory_limit}}
    if r.cpu_limit:
        res["limits"]["cpu"] = r.cpu_limit
    if gpu and r.gpu:
        res["requests"][p.accelerator_type] = res["limits"][p.accelerator_type] = str(p.accelerator_count)
    return res


def pod_patch(p, stage: str, gpu: bool) -> dict:
    """`spec.runtimePatches`: the pipeline pods' labels (MinIO's NetworkPolicy admits `cmva.io/role=pipeline`),
    GPU node pool placement and image pull Secrets, applied to the runtime's node pods."""
    pod: dict = {}
    if gpu and p.stage(stage).gpu:
        pod["nodeSelector"] = dict(p.node_selector)
        pod["tolerations"] = [dict(t) for t in p.tolerations]
    if p.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in p.image_pull_secrets]
    labels = {**p.pod_labels, "cmva.io/stage": stage}
    job = {"name": NODE_JOB, "template": {"spec": {"template": {"metadata": {"labels": labels}, "spec": pod}}}}
    return {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def trainjob_template(p, stage: str, gpu: bool) -> dict:
    """The TrainJob of `stage` as far as the platform decides it (no name, no arguments: `trainjob` adds them).

    Args:
        p: The platform settings (`cmva.config.PlatformCfg`).
        stage: A distributed stage of `cmva.stages` (`cmva.stages.DISTRIBUTED`).
        gpu: Whether GPU stages request the accelerator (`PlatformCfg.uses_gpu(profile)`).
    """
    t, r = p.training, p.stage(stage)
    env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": p.s3_secret, "key": k}}} for k in S3_KEYS]
    if p.s3_endpoint_url:
        env.insert(0, {"name": "AWS_ENDPOINT_URL", "value": p.s3_endpoint_url})
    spec = {
        "runtimeRef": {"name": t.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
        "trainer": {
            "image": p.image_ref(),
            "command": list(NODE_ENTRY),
            "numNodes": t.num_nodes,
            "numProcPerNode": t.procs_per_node,
            "resourcesPerNode": resources_per_node(p, stage, gpu),
            "env": env,
        },
        "runtimePatches": [pod_patch(p, stage, gpu)],
    }
    if r.timeout_s:
        spec["activeDeadlineSeconds"] = r.timeout_s
    labels = {**p.pod_labels, "cmva.io/stage": stage}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob", "metadata": {"labels": labels}, "spec": spec}


def launch_spec(p, stage: str, gpu: bool) -> dict:
    """What a launcher task needs, compiled into the pipeline as its `launch` parameter.

    Raises:
        ValueError: When a node would run more processes than it has GPUs.
    """
    t = p.training
    if gpu and p.stage(stage).gpu and t.procs_per_node > p.accelerator_count:
        raise ValueError(
            f"training.procs_per_node ({t.procs_per_node}) exceeds accelerator_count ({p.accelerator_count}): "
            "torchrun starts one process per GPU of a node"
        )
    return {
        "trainjob": trainjob_template(p, stage, gpu),
        "staging_uri": t.staging_uri,
        "poll_s": t.poll_s,
        "timeout_s": p.stage(stage).timeout_s,
    }


def job_name(stage: str, value: str | None, run_id: str, attempt: str) -> str:
    """A TrainJob name unique per KFP run, task and attempt: an RFC 1035 label short enough for JobSet's pod names.

    Example:
        >>> job_name("train-agent", "care", "run-1", "pod-a")[:16]
        'cmva-agent-care-'
    """
    digest = hashlib.sha256(f"{run_id}/{stage}/{value}/{attempt}".encode()).hexdigest()[:10]
    parts = ["cmva", stage.removeprefix("train-"), re.sub(r"[^a-z0-9]", "", (value or "").lower())[:12], digest]
    return "-".join(x for x in parts if x)


def trainjob(template: dict, name: str, args: list[str], run_id: str = "") -> dict:
    """The TrainJob to create: `template` with its name, the KFP run as a label and the node entry's arguments."""
    body = copy.deepcopy(template)
    trainer = body["spec"]["trainer"]
    for key in ("numNodes", "numProcPerNode"):  # a KFP dict parameter carries numbers as floats: the CRD wants ints
        trainer[key] = int(trainer[key])
    if "activeDeadlineSeconds" in body["spec"]:
        body["spec"]["activeDeadlineSeconds"] = int(body["spec"]["activeDeadlineSeconds"])
    body["metadata"]["name"] = name
    if LABEL_VALUE.match(run_id or ""):
        body["metadata"].setdefault("labels", {})["cmva.io/kfp-run-id"] = run_id
    trainer["args"] = list(args)
    return body


def job_state(job: dict) -> tuple[str, str]:
    """('Complete' | 'Failed' | 'Running', the condition's reason and message) of a TrainJob object."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"], ": ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
    return "Running", ""


def node0_pods(core, namespace: str, name: str) -> list[str]:
    """Names of the started (not pending) pods of node 0 of TrainJob `name` (a restarted node has several)."""
    selector = (
        f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name={NODE_JOB},"
        "batch.kubernetes.io/job-completion-index=0"
    )
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [p.metadata.name for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")]


def stream_log(core, namespace: str, pod: str, out) -> None:
    """Copy the trainer container's log of `pod` to `out` as it is written, until the container ends."""
    resp = core.read_namespaced_pod_log(pod, namespace, container=NODE_JOB, follow=True, _preload_content=False)
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode  # a character may span two chunks
    try:
        for chunk in resp.stream(1 << 14):
            out.write(decode(chunk))
            out.flush()
    finally:
        resp.release_conn()


def run_trainjob(
    body: dict,
    namespace: str,
    custom,
    core,
    timeout_s: float = 0,
    poll_s: float = 10,
    out=None,
    sleep=time.sleep,
    clock=time.monotonic,
) -> dict:
    """Create the TrainJob, stream node 0's log into `out`, and wait until it completes.

    The job is deleted once it has completed, or when waiting ends without a verdict (timeout, interruption), so it
    holds no GPU nodes; a failed job is kept for inspection.

    Args:
        body: The TrainJob (`trainjob(...)`).
        namespace: Where to create it (the pipeline's namespace).
        custom: A `kubernetes.client.CustomObjectsApi` (or a stand-in with the same methods).
        core: A `kubernetes.client.CoreV1Api` (pods and their logs).
        timeout_s: Give up after this long (0: wait as long as it runs).

    Returns:
        The completed TrainJob object.

    Raises:
        TrainJobFailed: The job failed (naming it and the condition's reason), or timed out.
    """
    out = out or sys.stdout
    name = body["metadata"]["name"]
    where = f"TrainJob {namespace}/{name}"
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    log.info("created %s (%d nodes)", where, body["spec"]["trainer"].get("numNodes", 1))
    deadline, streamed, verdict = clock() + timeout_s if timeout_s else None, set(), None
    try:
        while True:
            for pod in [p for p in node0_pods(core, namespace, name) if p not in streamed]:
                streamed.add(pod)
                try:
                    stream_log(core, namespace, pod, out)
                except Exception as e:  # the log is a courtesy: the job's conditions decide
                    log.warning("log of %s (%s) not streamed: %s", pod, where, e)
            job = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            verdict, message = job_state(job)
            if verdict == "Complete":
                return job
            if verdict == "Failed":
                raise TrainJobFailed(f"{where} failed: {message or 'no message'}")
            if deadline is not None and clock() >= deadline:
                raise TrainJobFailed(f"{where} did not finish within {timeout_s:.0f} s")
            sleep(poll_s)
    finally:
        if verdict != "Failed":
            _delete(custom, namespace, name)


def _delete(custom, namespace: str, name: str) -> None:
    """Delete the TrainJob and, through its owner references, its JobSet and pods; a failure is only logged."""
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
    except Exception as e:  # never hide the exception that ended the wait
        log.warning("could not delete TrainJob %s/%s: %s", namespace, name, e)


def kube_clients():
    """(CustomObjectsApi, CoreV1Api) from the pod's service account, else from the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def current_namespace() -> str:
    """CMVA_TRAINJOB_NAMESPACE, else the namespace of this pod's service account."""
    ns = os.environ.get("CMVA_TRAINJOB_NAMESPACE")
    if ns:
        return ns
    if SA_NAMESPACE.is_file():
        return SA_NAMESPACE.read_text().strip()
    raise RuntimeError(f"no namespace for the TrainJob: set CMVA_TRAINJOB_NAMESPACE ({SA_NAMESPACE} is missing)")


def stage_input(staging, uri: str, path: str) -> str:
    """The s3:// URI of a KFP input artifact published under the staging store (once per artifact URI)."""
    name = "inputs/" + hashlib.sha256(uri.encode()).hexdigest()[:16]
    if not staging.exists(name):
        staging.publish(Path(path), name, overwrite=True)  # concurrent launchers write the same content
    return staging.uri_of(name)


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM (how KFP cancels a task) raises SystemExit inside the block, so `run_trainjob` deletes its job."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch_stage(
    stage: str, kwargs: dict, inputs: dict, launch: dict, run_id: str, out: str, clients=None, staging=None
) -> dict:
    """Run stage `stage` as a TrainJob and copy its output into `out` (the KFP output artifact's directory).

    Args:
        stage: A distributed stage of `cmva.stages` (run on the nodes by `cmva.kfp_ops.run_stage`).
        kwargs: The stage function's parameters other than its artifact paths.
        inputs: Artifact parameter name → (KFP artifact URI, local path).
        launch: `launch_spec(...)`, compiled into the pipeline.
        run_id: The KFP run id (a label on the TrainJob).
        out: Directory that receives the output rank 0 published.
        clients: (CustomObjectsApi, CoreV1Api); default: `kube_clients()`.
        staging: The staging store; default: `S3Store(launch["staging_uri"])`.

    Returns:
        The TrainJob that ran.
    """
    from cmva.storage import MANIFEST, S3Store

    staging = staging or S3Store(launch["staging_uri"])
    name = job_name(stage, kwargs.get("value"), run_id, os.environ.get("HOSTNAME", str(time.time())))
    spec = {
        "kwargs": kwargs,
        "inputs": {k: stage_input(staging, uri, path) for k, (uri, path) in inputs.items()},
        "output": staging.uri_of(f"{name}/output"),
    }
    body = trainjob(launch["trainjob"], name, [stage, json.dumps(spec, sort_keys=True)], run_id)
    custom, core = clients or kube_clients()
    with _sigterm_unwinds():
        run_trainjob(body, current_namespace(), custom, core, launch.get("timeout_s", 0), launch.get("poll_s", 10))
    shutil.copytree(staging.get(f"{name}/output"), out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
    return body
