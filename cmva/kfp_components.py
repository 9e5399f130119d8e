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


# ---- stage components, derived from the declarations in cmva.stages ----------------------------------------------


def _parameters(st, trainjob: bool) -> list[str]:
    """The component's parameters: the stage's settings, data URIs, input and output artifacts (KFP reads the types)."""
    from cmva.stages import BY_OUTPUT

    params = ["value: str"] if st.per_value else []
    params += ["profile: str", "overrides: dict", "values: list", *(f"{d}_uri: str" for d in st.data)]
    params += [f"{i}: Input[{'Model' if i == 'agents' else BY_OUTPUT[i].output_type}]" for i in st.inputs]
    params += ["launch: dict", "run_id: str"] if trainjob else []
    params += [f"{st.output}: Output[{st.output_type}]"]
    params += ["metrics: Output[Metrics]"] if st.summary else []
    params += ["report_md: Output[Markdown]", "report_html: Output[HTML]"] if st.reports else []
    params += ["nproc: int = 1"] if st.distributed and not trainjob else []
    return params


def _component_source(st, trainjob: bool) -> str:
    """The Python source of a stage's component: its signature, its doc, one call into cmva.kfp_ops."""
    fn = st.name.replace("-", "_") + ("_trainjob" if trainjob else "")
    runner = "run_trainjob_component" if trainjob else "run_component"
    doc = st.doc + (
        " On several nodes: a Kubeflow Trainer TrainJob (`launch`), node 0's log streamed here."
        if trainjob
        else " Data-parallel over `nproc` processes (one per GPU)."
        if st.distributed
        else ""
    )
    return (
        f"def {fn}({', '.join(_parameters(st, trainjob))}):\n"
        f'    """{doc}"""\n'
        f"    from cmva.kfp_ops import {runner}\n\n"
        f"    {runner}({st.name!r}, locals())\n"
    )


def stage_component(st, trainjob: bool = False):
    """The KFP component of stage `st` (or of its TrainJob launcher): compiled from generated source, which KFP
    embeds in the IR like any lightweight component's (the source is registered with linecache for `inspect`)."""
    import linecache

    src = _component_source(st, trainjob)
    filename = f"<cmva.kfp_components {st.name}{' trainjob' if trainjob else ''}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)
    namespace = {"__name__": __name__, "Input": Input, "Output": Output, "Model": Model, "Dataset": Dataset}
    namespace |= {"Metrics": Metrics, "Markdown": Markdown, "HTML": HTML}
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 (source built above from the declarations)
    return cmva_component(namespace[src[4 : src.index("(")]])


def _stage_components() -> dict:
    from cmva.stages import STAGES

    out = {s.name.replace("-", "_"): stage_component(s) for s in STAGES}
    out |= {s.name.replace("-", "_") + "_trainjob": stage_component(s, True) for s in STAGES if s.distributed}
    return out


STAGE_COMPONENTS = _stage_components()  # "train_agent", "train_agent_trainjob", …: the names components/ re-export
globals().update(STAGE_COMPONENTS)


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
