"""The CMVA-GS KFP pipeline, wired from the stage declarations (cmva.stages): each stage's task reads the outputs
its declaration names.

    import-base ─┬─ train-agent: <value> (one task per value) ── collect-agents ── build-aggregator-data
    train-rewards┘                                                              └─ train-aggregator ── evaluate
    evaluate ── quality-gate ──[verdict == pass]── publish-for-serving ──[channel != ""]── promote

The moral values are fixed when the pipeline is built (one named task per agent: the dashboard shows
`train-agent: care`…); the platform settings (image, per-stage resources, retries, timeouts, labels, pull
secrets, GPUs unless the profile runs on CPU) are compiled in. `cmva pipeline compile|run|submit` build it.

On a multi-node platform (`training: {mode: trainjob}`, e.g. pipelines/platforms/multinode.yaml) the training stages
it lists run as Kubeflow Trainer v2 TrainJobs: their tasks are small launchers (`*_trainjob` components, no GPU) that
create the TrainJob compiled in as their `launch` parameter (cmva.trainjob), stream its log and wait for it.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's parameter types from its annotations.
from collections.abc import Sequence

from kfp import dsl, kubernetes

from cmva import kfp_components as c
from cmva.config import PlatformCfg, StageResources

PIPELINE_NAME = "cmva-gs"
STORE_URI = "s3://cmva/serving"


def configure(
    task, stage: str, p: PlatformCfg, gpu: bool, display_name: str | None = None, r: StageResources | None = None
):
    """Image, MinIO credentials (Secret → env), resources (`r`, default the stage's), timeout, retries, labels and,
    on GPU stages, the accelerator and GPU node pool."""
    r = r or p.stage(stage)
    task.set_container_image(p.image_ref())
    kubernetes.use_secret_as_env(
        task, secret_name=p.s3_secret, secret_key_to_env={k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    )
    if p.s3_endpoint_url:
        task.set_env_variable("AWS_ENDPOINT_URL", p.s3_endpoint_url)
    task.set_cpu_request(r.cpu_request).set_memory_request(r.memory_request).set_memory_limit(r.memory_limit)
    if r.cpu_limit:
        task.set_cpu_limit(r.cpu_limit)
    if r.timeout_s:
        kubernetes.set_timeout(task, r.timeout_s)
    if p.retries:
        task.set_retry(p.retries, backoff_duration=p.retry_backoff, backoff_factor=2.0)
    for key, value in {**p.pod_labels, "cmva.io/stage": stage}.items():
        kubernetes.add_pod_label(task, key, value)
    if p.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(p.image_pull_secrets))
    if gpu and r.gpu:
        task.set_accelerator_type(p.accelerator_type).set_accelerator_limit(p.accelerator_count)
        for key, value in p.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for t in p.tolerations:
            kubernetes.add_toleration(task, **t)
    if display_name and p.display_names:
        task.set_display_name(display_name)
    return task


def launcher_resources(p: PlatformCfg, stage: str) -> StageResources:
    """A TrainJob launcher's pod: no GPU, little CPU and memory; it outlives the job's own deadline by 10 minutes so
    that it reports the job's failure rather than being killed first."""
    timeout = p.stage(stage).timeout_s
    return StageResources(
        cpu_request="500m", memory_request="1Gi", memory_limit="2Gi", timeout_s=timeout + 600 if timeout else 0
    )


def stage_task(st, p: PlatformCfg, gpu: bool, args: dict, value: str | None = None):
    """The task of stage `st` (cmva.stages) with its arguments: its component in its own pod (a distributed stage with
    one process per GPU it requests), or on a multi-node platform its launcher creating the TrainJob of
    `cmva.trainjob.launch_spec` and waiting for it."""
    name = st.name.replace("-", "_")
    kw = {**args, "value": value} if st.per_value else args
    display = f"{st.name}: {value}" if value else None
    if not (st.distributed and p.runs_as_trainjob(st.name)):
        extra = {"nproc": p.processes(st.name, gpu)} if st.distributed else {}
        return configure(c.STAGE_COMPONENTS[name](**kw, **extra), st.name, p, gpu, display)
    from cmva.trainjob import launch_spec

    launcher = c.STAGE_COMPONENTS[f"{name}_trainjob"]
    task = launcher(**kw, launch=launch_spec(p, st.name, gpu), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    return configure(task, st.name, p, gpu, display, launcher_resources(p, st.name))


def stage_args(st, params: dict, produced: dict) -> dict:
    """A stage's arguments: the run's settings and values, its data files' URIs, the outputs it reads."""
    args = {k: params[k] for k in ("profile", "overrides", "values")}
    args |= {f"{d}_uri": params[f"{d}_uri"] for d in st.data}
    return args | {i: produced[i] for i in st.inputs}


def per_value_tasks(st, p: PlatformCfg, gpu: bool, args: dict, names: list[str]) -> dict:
    """One task of `st` per moral value, at most `p.agent_parallelism` at once; {value: task}."""
    tasks: list = []
    for i, value in enumerate(names):
        task = stage_task(st, p, gpu, args, value)
        if p.agent_parallelism and i >= p.agent_parallelism:
            task.after(tasks[i - p.agent_parallelism])
        tasks.append(task)
    return dict(zip(names, tasks, strict=True))


def train_and_evaluate(p: PlatformCfg, gpu: bool, params: dict, names: list[str]) -> dict:
    """Every stage of cmva.stages in order, each reading the outputs it names; the per-value agents collected into one
    artifact ("agents"). Returns every output by name."""
    from cmva.stages import STAGES

    produced: dict = {}
    for st in STAGES:
        args = stage_args(st, params, produced)
        if not st.per_value:
            produced[st.output] = stage_task(st, p, gpu, args).outputs[st.output]
            continue
        tasks = per_value_tasks(st, p, gpu, args, names)
        collected = c.collect_agents(**{v: t.outputs[st.output] for v, t in tasks.items()})
        produced["agents"] = configure(collected, "collect-agents", p, gpu).outputs["agents"]
    return produced


def build_pipeline(p: PlatformCfg | None = None, values: Sequence[str] | None = None, profile: str = "cpu"):
    """The pipeline function for these moral values, with the Kubernetes settings compiled in.

    `profile` is the default of the pipeline's `profile` parameter and decides the GPU requests: none for the
    CPU recipes (`smoke`, `cpu`) unless `p.gpu` says otherwise.
    """
    from cmva.values import resolve_values

    p = p or PlatformCfg()
    names = [v.name for v in resolve_values(values)]
    gpu = p.uses_gpu(profile)
    description = (
        f"CMVA-GS on the values {', '.join(names)}: value reward classifiers, one RL-trained moral agent per value, "
        "the contextual aggregator, evaluation against the baselines; published for serving and promoted to a "
        "channel when the recipe's quality gate passes."
    )

    @dsl.pipeline(name=PIPELINE_NAME, description=description)
    def cmva_gs(
        profile: str = profile,
        overrides: dict = {},  # noqa: B006 (KFP parameters take literal defaults)
        mic_uri: str = "",
        socialchem_uri: str = "",
        eval_uri: str = "",
        store_uri: str = STORE_URI,
        channel: str = "staging",
    ):
        """CMVA-GS: train, evaluate, gate, publish and promote.

        Args:
            profile: Recipe: smoke, cpu, paper, or the path of a recipe YAML inside the image.
            overrides: Recipe values to override, dotted keys, e.g. {"agent.max_steps": 10, "gate.enforce": false}.
            mic_uri: MIC-schema CSV for training (s3://bucket/key or a path in the image); empty: the bundled sample.
            socialchem_uri: Social-Chemistry-101 TSV for the reward classifiers; empty: the bundled sample.
            eval_uri: MIC-schema CSV to evaluate on; empty: the training file's test split.
            store_uri: Where runs are published (<store_uri>/<run id>/) and channels live (<store_uri>/channels/<channel>/).
            channel: Serving channel to promote this run to when the quality gate passes (e.g. staging); empty: publish only.
        """
        params = dict(profile=profile, overrides=overrides, values=names, mic_uri=mic_uri)
        params |= dict(socialchem_uri=socialchem_uri, eval_uri=eval_uri)
        out = train_and_evaluate(p, gpu, params, names)
        common = dict(profile=profile, overrides=overrides)
        gate = configure(c.quality_gate(**common, report=out["report"]), "quality-gate", p, gpu)
        with dsl.If(gate.outputs["Output"] == "pass", name="quality-gate-passed"):
            published = configure(
                c.publish_for_serving(
                    store_uri=store_uri,
                    version=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    base=out["base"],
                    rewards=out["rewards"],
                    agents=out["agents"],
                    aggregator=out["aggregator"],
                ),
                "publish-for-serving",
                p,
                gpu,
            ).set_caching_options(False)  # writes outside KFP's artifact store: always run
            with dsl.If(channel != "", name="promotion-requested"):
                configure(
                    c.promote(store_uri=store_uri, run_id=published.outputs["run_id"], channel=channel),
                    "promote",
                    p,
                    gpu,
                ).set_caching_options(False)

    return cmva_gs
