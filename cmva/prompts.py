"""Every prompt format, in one place. Each returns chat messages for the base model's
chat template, so the same prompt serves RL training, SFT, evaluation and the model servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cmva.values import MoralValue

Messages = list[dict[str, str]]

AGGREGATOR_INSTRUCTION = (
    "Write one short answer to the question that follows the user's moral profile: "
    "values with a higher weight matter more, values with weight 0 do not matter."
)


def agent_messages(question: str) -> Messages:
    """A moral agent or the PT model: the question as the user turn."""
    return [{"role": "user", "content": question}]


def format_profile(profile: Mapping[str, float]) -> str:
    """`care=1.0, fairness=0.5, …` in the configured value order."""
    return ", ".join(f"{v}={w:g}" for v, w in profile.items())


def active_values(profile: Mapping[str, float], skip_zero_weight: bool = True) -> list[str]:
    """The agents to run for a profile: those with c_i > 0 (all of them if not skipping)."""
    return [v for v, w in profile.items() if w > 0 or not skip_zero_weight]


def aggregator_messages(
    question: str, profile: Mapping[str, float], answers: Mapping[str, str], order: Sequence[str] | None = None
) -> Messages:
    """The aggregator's input: question, profile c as value=weight pairs, each agent's answer tagged with its value
    and weight.

    Answers are listed in `order` (the aggregator's: best for c first, `cmva.ranking`), or else by weight, highest
    first (ties in the configured value order; the prompt-aggregation baseline). Agents absent from `answers`
    (weight 0, or failed in serving) are listed as skipped, so the aggregator sees the same format in training and
    in production.
    """
    if order is None:
        header = "Answers from the moral agents:"
        shown = sorted((v for v in profile if v in answers), key=lambda v: -profile[v])  # stable: value order on ties
    else:
        header = "Answers from the moral agents, the best match for this profile first:"
        listed = [v for v in order if v in profile] + [v for v in profile if v not in order]
        shown = [v for v in listed if v in answers]  # an answer for a value without a weight is not shown
    lines = [f"Question: {question}", f"Moral profile: {format_profile(profile)}", header]
    lines += [f"[{v}, weight {profile[v]:g}] {answers[v].strip()}" for v in shown]
    skipped = [v for v in profile if v not in answers]
    if skipped:
        lines.append(f"(skipped: {', '.join(skipped)})")
    lines.append(AGGREGATOR_INSTRUCTION)
    return [{"role": "user", "content": "\n".join(lines)}]


def few_shot_messages(
    question: str,
    profile: Mapping[str, float],
    values: Sequence[MoralValue],
    examples: Mapping[str, Sequence[tuple[str, str]]],
) -> Messages:
    """The few-shot baseline: value definitions + examples per value with c_i > 0, then the question.

    Args:
        examples: value → (question, answer) pairs from the training split (5 per value in the paper).
    """
    wanted = [v for v in values if profile.get(v.name, 0) > 0] or list(values)
    parts = ["Answer the question following these moral values:"]
    parts += [f"- {v.name} (weight {profile.get(v.name, 0):g}): {v.definition}" for v in wanted]
    parts.append("Examples of answers that follow them:")
    for v in wanted:
        for q, a in examples.get(v.name, ()):
            parts.append(f"Q: {q}\nA: {a}")
    return [{"role": "system", "content": "\n".join(parts)}, {"role": "user", "content": question}]


def prompt_aggregation_messages(question: str, profile: Mapping[str, float], answers: Mapping[str, str]) -> Messages:
    """The prompt-aggregation baseline (the paper's Agg13Llama): the aggregator format on the un-tuned model."""
    return aggregator_messages(question, profile, answers)
