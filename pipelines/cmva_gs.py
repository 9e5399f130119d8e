"""The CMVA-GS pipeline: wiring only (every stage is a component calling cmva).

$ cmva pipeline compile --out build/        # IR YAML to upload in the Kubeflow dashboard
$ cmva pipeline run --local --profile smoke # the same DAG under kfp.local
"""

from kfp import dsl, kubernetes

from cmva.config import PlatformCfg
from components.build_aggregator_data import build_aggregator_data
from components.evaluate import evaluate
from components.import_base import import_base
from components.publish_for_serving import publish_for_serving
from components.train_agent import train_agent
from components.train_aggregator import train_aggregator
from components.train_rewards import train_rewards

DEFAULT_VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


def _platform(task, component: str, p: PlatformCfg):
    """MinIO credentials from the Secret, resources, and on GPU stages the accelerator + node pool."""
    kubernetes.use_secret_as_env(
        task, secret_name=p.s3_secret, secret_key_to_env={k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    )
    task.set_env_variable("AWS_ENDPOINT_URL", p.s3_endpoint_url)
    task.set_cpu_request(p.cpu_request).set_memory_request(p.memory_request).set_memory_limit(p.memory_limit)
    task.set_caching_options(True)
    if component in p.gpu_stages:
        task.set_accelerator_type(p.accelerator_type).set_accelerator_limit(p.accelerator_count)
        for key, value in p.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for t in p.tolerations:
            kubernetes.add_toleration(task, **t)
    return task


def build_pipeline(p: PlatformCfg | None = None):
    """The pipeline function with the given Kubernetes settings compiled in."""
    p = p or PlatformCfg()

    @dsl.pipeline(
        name="cmva-gs", description="CMVA-GS: value rewards, RL moral agents, contextual aggregator, evaluation"
    )
    def cmva_gs(
        profile: str = "cpu",
        overrides: dict = {},  # noqa: B006 (KFP parameters take literal defaults)
        values: list = DEFAULT_VALUES,
        mic_uri: str = "",
        socialchem_uri: str = "",
        eval_uri: str = "",
        store_uri: str = "s3://cmva/serving",
    ):
        base = _platform(import_base(profile=profile, overrides=overrides), "import-base", p)
        rewards = _platform(
            train_rewards(
                profile=profile, overrides=overrides, values=values, mic_uri=mic_uri, socialchem_uri=socialchem_uri
            ),
            "train-rewards",
            p,
        )
        with dsl.ParallelFor(values, parallelism=p.agent_parallelism) as value:
            agent = _platform(
                train_agent(
                    value=value,
                    profile=profile,
                    overrides=overrides,
                    values=values,
                    mic_uri=mic_uri,
                    base=base.outputs["base"],
                    rewards=rewards.outputs["rewards"],
                ),
                "train-agent",
                p,
            )

        def agents():  # a fresh Collected per consumer: kfp 2.17 fails to compile one shared Collected
            return dsl.Collected(agent.outputs["agent"])

        data = _platform(
            build_aggregator_data(
                profile=profile,
                overrides=overrides,
                values=values,
                mic_uri=mic_uri,
                base=base.outputs["base"],
                agents=agents(),
                rewards=rewards.outputs["rewards"],
            ),
            "build-aggregator-data",
            p,
        )
        agg = _platform(
            train_aggregator(
                profile=profile, overrides=overrides, base=base.outputs["base"], data=data.outputs["data"]
            ),
            "train-aggregator",
            p,
        )
        _platform(
            evaluate(
                profile=profile,
                overrides=overrides,
                values=values,
                mic_uri=mic_uri,
                eval_uri=eval_uri,
                base=base.outputs["base"],
                rewards=rewards.outputs["rewards"],
                agents=agents(),
                aggregator=agg.outputs["aggregator"],
            ),
            "evaluate",
            p,
        )
        _platform(
            publish_for_serving(
                store_uri=store_uri,
                version=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                base=base.outputs["base"],
                rewards=rewards.outputs["rewards"],
                agents=agents(),
                aggregator=agg.outputs["aggregator"],
            ),
            "publish-for-serving",
            p,
        )

    return cmva_gs
