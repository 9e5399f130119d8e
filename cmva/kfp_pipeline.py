"""The CMVA-GS KFP pipeline: wiring only (every stage is a component in `cmva.kfp_components`).

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


def training_task(component, launcher, stage: str, p: PlatformCfg, gpu: bool, display_name: str | None = None, **kw):
    """The task of training stage `stage`: `component` in its own pod (one process per GPU it requests), or on a
    multi-node platform `launcher` creating the TrainJob of `cmva.trainjob.launch_spec` and waiting for it."""
    if not p.runs_as_trainjob(stage):
        return configure(component(**kw, nproc=p.processes(stage, gpu)), stage, p, gpu, display_name)
    from cmva.trainjob import launch_spec

    task = launcher(**kw, launch=launch_spec(p, stage, gpu), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    return configure(task, stage, p, gpu, display_name, launcher_resources(p, stage))


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
        common = dict(profile=profile, overrides=overrides)
        base = configure(c.import_base(**common), "import-base", p, gpu)
        rewards = configure(
            c.train_rewards(**common, values=names, mic_uri=mic_uri, socialchem_uri=socialchem_uri),
            "train-rewards",
            p,
            gpu,
        )
        agents = []
        for i, value in enumerate(names):
            task = training_task(
                c.train_agent,
                c.train_agent_trainjob,
                "train-agent",
                p,
                gpu,
                f"train-agent: {value}",
                value=value,
                **common,
                values=names,
                mic_uri=mic_uri,
                base=base.outputs["base"],
                rewards=rewards.outputs["rewards"],
            )
            if p.agent_parallelism and i >= p.agent_parallelism:
                task.after(agents[i - p.agent_parallelism])  # at most agent_parallelism agents train at once
            agents.append(task)
        collected = configure(
            c.collect_agents(**{v: t.outputs["agent"] for v, t in zip(names, agents, strict=True)}),
            "collect-agents",
            p,
            gpu,
        )
        data = configure(
            c.build_aggregator_data(
                **common,
                values=names,
                mic_uri=mic_uri,
                base=base.outputs["base"],
                agents=collected.outputs["agents"],
                rewards=rewards.outputs["rewards"],
            ),
            "build-aggregator-data",
            p,
            gpu,
        )
        agg = training_task(
            c.train_aggregator,
            c.train_aggregator_trainjob,
            "train-aggregator",
            p,
            gpu,
            **common,
            base=base.outputs["base"],
            data=data.outputs["data"],
        )
        ev = configure(
            c.evaluate(
                **common,
                values=names,
                mic_uri=mic_uri,
                eval_uri=eval_uri,
                base=base.outputs["base"],
                rewards=rewards.outputs["rewards"],
                agents=collected.outputs["agents"],
                aggregator=agg.outputs["aggregator"],
            ),
            "evaluate",
            p,
            gpu,
        )
        gate = configure(c.quality_gate(**common, report=ev.outputs["report"]), "quality-gate", p, gpu)
        with dsl.If(gate.outputs["Output"] == "pass", name="quality-gate-passed"):
            published = configure(
                c.publish_for_serving(
                    store_uri=store_uri,
                    version=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    base=base.outputs["base"],
                    rewards=rewards.outputs["rewards"],
                    agents=collected.outputs["agents"],
                    aggregator=agg.outputs["aggregator"],
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
