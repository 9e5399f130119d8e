"""Baselines of the paper, as generation jobs `(messages, adapter)` for the engine.

- PT: the pre-trained model on the question.
- few-shot: value definitions + 5 (question, answer) examples per value with c_i > 0, from the training
  split, then the question (the paper's prompted Llama baselines, here on the same base model).
- prompt-aggregation: the aggregator's input format on the un-tuned base model (the paper's Agg13Llama).
- weighted merge (P-Soups style): the agents' adapters merged with weights c / Σc, exactly for LoRA.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from cmva.engine import BASE
from cmva.prompts import active_values, agent_messages, few_shot_messages, prompt_aggregation_messages
from cmva.values import MoralValue

Job = tuple[list[dict[str, str]], str]


def pt_jobs(questions: Sequence[str]) -> list[Job]:
    return [(agent_messages(q), BASE) for q in questions]


def few_shot_examples(
    train_rows: Sequence[Mapping], values: Sequence[MoralValue], k: int = 5, seed: int = 0
) -> dict[str, list[tuple[str, str]]]:
    """k (question, target answer) pairs per value, drawn with a fixed seed from training rows with c_v > 0."""
    rng = random.Random(seed)
    out = {}
    for v in values:
        pool = [(r["question"], r["target"]) for r in train_rows if r["target"] and v.name in r["moral"]]
        rng.shuffle(pool)
        out[v.name] = pool[:k]
    return out


def few_shot_jobs(questions, profiles, values, examples) -> list[Job]:
    return [(few_shot_messages(q, p, values, examples), BASE) for q, p in zip(questions, profiles, strict=True)]


def prompt_aggregation_jobs(questions, profiles, agent_outputs, skip_zero_weight: bool = True) -> list[Job]:
    return [
        (prompt_aggregation_messages(q, p, {v: a[v] for v in active_values(p, skip_zero_weight) if v in a}), BASE)
        for q, p, a in zip(questions, profiles, agent_outputs, strict=True)
    ]


def merge_name(profile: Mapping[str, float]) -> str:
    key = ",".join(f"{v}={w:g}" for v, w in profile.items())
    return "merge-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def weighted_merge_jobs(engine, questions, profiles) -> list[Job]:
    """One merged adapter per distinct profile (weights normalised to sum 1); PT model for an all-zero profile."""
    jobs = []
    for q, p in zip(questions, profiles, strict=True):
        total = sum(w for w in p.values() if w > 0)
        if total <= 0:
            jobs.append((agent_messages(q), BASE))
            continue
        weights = {v: w / total for v, w in p.items() if w > 0 and v in engine.adapters}
        name = engine.add_weighted_adapter(merge_name(p), weights) if weights else BASE
        jobs.append((agent_messages(q), name))
    return jobs
