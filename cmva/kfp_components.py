"""KFP components: one per stage, each a thin call into `cmva.kfp_ops` (the top-level `components/` re-export them).

They run on the Dockerfile.train image, which has cmva and kfp installed: nothing is pip-installed at run time
(air-gapped on-prem). The pipeline sets each task's image from the platform settings (`PlatformCfg.image_ref()`,
optionally pinned by digest); `TRAIN_IMAGE` is only the components' own default. Being part of the package, they
compile from an installed wheel and inside the train image.
"""

import functools
import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

TRAIN_IMAGE = os.environ.get("CMVA_TRAIN_IMAGE", "ghcr.io/cmva/cmva-train:0.1.0")

cmva_component = functools.partial(dsl.component, base_image=TRAIN_IMAGE, install_kfp_package=False)


@cmva_component
def import_base(profile: str, overrides: dict, base: Output[Model]):
    """Base model → plain safetensors checkpoint (GGUF-loaded models refuse training)."""
    from cmva.kfp_ops import atomic_dir, import_base_op

    with atomic_dir(base.path) as out:
        base.metadata.update(import_base_op(profile, overrides, out))


@cmva_component
def train_rewards(
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    socialchem_uri: str,
    rewards: Output[Model],
    metrics: Output[Metrics],
):
    """One value classifier per moral value; held-out accuracy and F1 as metrics."""
    from cmva.kfp_ops import atomic_dir, log_metrics, train_rewards_op

    with atomic_dir(rewards.path) as out:
        result = train_rewards_op(profile, overrides, values, mic_uri, socialchem_uri, out)
    log_metrics(metrics, result)


@cmva_component
def train_agent(
    value: str,
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    base: Input[Model],
    rewards: Input[Model],
    agent: Output[Model],
    metrics: Output[Metrics],
    nproc: int = 1,
):
    """RL (TRL RLOO + LoRA, KL to the PT model) against one value's reward; data-parallel over `nproc` processes."""
    from cmva.kfp_ops import atomic_dir, log_metrics, train_agent_op

    with atomic_dir(agent.path) as out:
        result = train_agent_op(value, profile, overrides, values, mic_uri, base.path, rewards.path, out, nproc)
    agent.metadata["value"] = value
    log_metrics(metrics, result)


@cmva_component
def train_agent_trainjob(
    value: str,
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    base: Input[Model],
    rewards: Input[Model],
    launch: dict,
    run_id: str,
    agent: Output[Model],
    metrics: Output[Metrics],
):
    """train-agent on several nodes: a Kubeflow Trainer TrainJob (`launch`), its node-0 log streamed here."""
    from cmva.kfp_ops import atomic_dir, log_metrics, train_agent_trainjob_op

    with atomic_dir(agent.path) as out:
        args = (base.uri, base.path), (rewards.uri, rewards.path), launch, run_id, out
        result = train_agent_trainjob_op(value, profile, overrides, values, mic_uri, *args)
    agent.metadata["value"] = value
    log_metrics(metrics, result)


@cmva_component
def collect_agents(
    agents: Output[Model],
    metrics: Output[Metrics],
    care: Input[Model] = None,
    fairness: Input[Model] = None,
    loyalty: Input[Model] = None,
    authority: Input[Model] = None,
    sanctity: Input[Model] = None,
    liberty: Input[Model] = None,
):
    """The trained agents as one artifact, `<value>/` each (one optional input per known moral value)."""
    from cmva.kfp_ops import atomic_dir, collect_agents_op, log_metrics

    given = dict(care=care, fairness=fairness, loyalty=loyalty, authority=authority, sanctity=sanctity, liberty=liberty)
    with atomic_dir(agents.path) as out:
        result = collect_agents_op({v: a.path for v, a in given.items() if a is not None}, out)
    agents.metadata["values"] = [v for v, a in given.items() if a is not None]
    log_metrics(metrics, result)


@cmva_component
def build_aggregator_data(
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    base: Input[Model],
    agents: Input[Model],
    rewards: Input[Model],
    data: Output[Dataset],
):
    """Every agent's answer per MIC training question; rows under several profiles c, each with the candidate of
    highest normalised c·r(y) as target (cmva.aggregator_data)."""
    from cmva.kfp_ops import atomic_dir, build_aggregator_data_op

    with atomic_dir(data.path) as out:
        stats = build_aggregator_data_op(
            profile, overrides, values, mic_uri, base.path, [agents.path], rewards.path, out
        )
    data.metadata.update(stats)


@cmva_component
def train_aggregator(
    profile: str,
    overrides: dict,
    base: Input[Model],
    data: Input[Dataset],
    aggregator: Output[Model],
    metrics: Output[Metrics],
    nproc: int = 1,
):
    """LoRA SFT of the contextual aggregator (loss on the answer tokens only); data-parallel over `nproc` processes."""
    from cmva.kfp_ops import atomic_dir, log_metrics, train_aggregator_op

    with atomic_dir(aggregator.path) as out:
        result = train_aggregator_op(profile, overrides, base.path, data.path, out, nproc)
    log_metrics(metrics, result)


@cmva_component
def train_aggregator_trainjob(
    profile: str,
    overrides: dict,
    base: Input[Model],
    data: Input[Dataset],
    launch: dict,
    run_id: str,
    aggregator: Output[Model],
    metrics: Output[Metrics],
):
    """train-aggregator on several nodes: a Kubeflow Trainer TrainJob (`launch`), its node-0 log streamed here."""
    from cmva.kfp_ops import atomic_dir, log_metrics, train_aggregator_trainjob_op

    with atomic_dir(aggregator.path) as out:
        args = (base.uri, base.path), (data.uri, data.path), launch, run_id, out
        result = train_aggregator_trainjob_op(profile, overrides, *args)
    log_metrics(metrics, result)


@cmva_component
def evaluate(
    profile: str,
    overrides: dict,
    values: list,
    mic_uri: str,
    eval_uri: str,
    base: Input[Model],
    rewards: Input[Model],
    agents: Input[Model],
    aggregator: Input[Model],
    report: Output[Model],
    metrics: Output[Metrics],
    report_md: Output[Markdown],
    report_html: Output[HTML],
):
    """ROUGE vs baselines, agent conformity, profile sensitivity; the report as Markdown and HTML, plots inlined."""
    from cmva.kfp_ops import atomic_dir, evaluate_op, log_metrics

    with atomic_dir(report.path) as out:
        args = (base.path, rewards.path, [agents.path], aggregator.path, out)
        result, md, html = evaluate_op(profile, overrides, values, mic_uri, eval_uri, *args)
    log_metrics(metrics, result)
    with open(report_md.path, "w") as f:
        f.write(md)
    with open(report_html.path, "w") as f:
        f.write(html)


@cmva_component
def quality_gate(
    profile: str, overrides: dict, report: Input[Model], metrics: Output[Metrics], verdict: Output[Markdown]
) -> str:
    """'pass' when the evaluation clears the recipe's `gate:` thresholds (or the gate is not enforced), else 'fail'."""
    from cmva.kfp_ops import gate_op, log_metrics

    result, values, md = gate_op(profile, overrides, report.path)
    log_metrics(metrics, values)
    with open(verdict.path, "w") as f:
        f.write(md)
    return result


@cmva_component
def publish_for_serving(
    store_uri: str,
    version: str,
    base: Input[Model],
    rewards: Input[Model],
    agents: Input[Model],
    aggregator: Input[Model],
) -> NamedTuple("Published", [("run_id", str), ("uri", str)]):
    """Base, rewards, agents and aggregator under `<store_uri>/<version>/`, with the run's release record."""
    from collections import namedtuple

    from cmva.kfp_ops import publish_op

    uri = publish_op(store_uri, version, base.path, rewards.path, [agents.path], aggregator.path)
    return namedtuple("Published", ["run_id", "uri"])(version, uri)


@cmva_component
def promote(store_uri: str, run_id: str, channel: str) -> str:
    """Make a serving channel (`<store_uri>/channels/<channel>`) serve this run; returns the channel's URI."""
    from cmva.kfp_ops import promote_op

    return promote_op(store_uri, run_id, channel)
