"""evaluate: ROUGE vs baselines, agent conformity, profile sensitivity; report as Markdown and HTML."""

from kfp.dsl import HTML, Input, Markdown, Metrics, Model, Output

from components import cmva_component


@cmva_component
def evaluate(profile: str, overrides: dict, values: list, mic_uri: str, eval_uri: str, base: Input[Model], rewards: Input[Model], agents: Input[list[Model]], aggregator: Input[Model], report: Output[Model], metrics: Output[Metrics], report_md: Output[Markdown], report_html: Output[HTML]):
    from cmva.kfp_ops import atomic_dir, evaluate_op, log_metrics

    with atomic_dir(report.path) as out:
        result, md, html = evaluate_op(profile, overrides, values, mic_uri, eval_uri, base.path, rewards.path, [a.path for a in agents], aggregator.path, out)
    log_metrics(metrics, result)
    open(report_md.path, "w").write(md), open(report_html.path, "w").write(html)
