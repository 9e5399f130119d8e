"""The contextual aggregator (CMVA-GS): data building, LoRA SFT, and profile-conditioned answers.

Input: the user's question, the moral profile c, and the answers of the agents with c_i > 0 (agents
with weight 0 are skipped, in training exactly as in serving). Target: the candidate (an agent's answer or
MIC's ground truth) with the highest normalised c·r(y), several profiles per question (`cmva.aggregator_data`).
Training: TRL SFTTrainer on prompt-completion data, so the loss is on the answer tokens only.

Example:
    $ cmva build-aggregator-data --artifacts runs/cpu --out runs/cpu/aggregator-data
    $ cmva train-aggregator --artifacts runs/cpu --out runs/cpu/aggregator
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from cmva.config import AggregatorCfg
from cmva.distributed import is_main, per_device_batch
from cmva.prompts import active_values, agent_messages, aggregator_messages

log = logging.getLogger(__name__)


def agent_answers(
    engine,
    questions: Sequence[str],
    wanted: Sequence[Sequence[str]],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: str | None = None,
) -> list[dict[str, str]]:
    """Run the wanted agents on each question in one mixed-adapter pass: [{value: answer}] per question."""
    jobs = [(qi, v) for qi, vs in enumerate(wanted) for v in vs]
    texts = engine.generate(
        [agent_messages(questions[qi]) for qi, _ in jobs],
        [v for _, v in jobs],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    out: list[dict[str, str]] = [{} for _ in questions]
    for (qi, v), t in zip(jobs, texts, strict=True):
        out[qi][v] = t
    return out


def profile_dict(values: Sequence[str], profile: Sequence[float]) -> dict[str, float]:
    return dict(zip(values, (float(w) for w in profile), strict=True))


def train_aggregator(
    base_path: str | Path,
    data_file: str | Path,
    out_dir: str | Path,
    cfg: AggregatorCfg,
    seed: int = 0,
    dtype: str = "float32",
) -> dict:
    """LoRA SFT of the aggregator on (question, profile, agent answers) → target.

    Under torchrun every rank trains on its shard of the recipe's global batch; rank 0 alone writes.
    """
    import time

    from datasets import Dataset
    from trl import SFTTrainer

    from cmva.agents import batch_summary, lora_config
    from cmva.label_scoring import score_labelled_positions_only
    from cmva.models import load_causal_lm, load_tokenizer

    score_labelled_positions_only()  # the loss is on the answer tokens: the prompt's need no vocabulary projection
    records = [json.loads(line) for line in open(data_file)]
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    out = Path(out_dir)
    trainer = SFTTrainer(
        model=load_causal_lm(base_path, dtype),
        args=sft_config(cfg, out, seed),
        train_dataset=ds,
        processing_class=load_tokenizer(base_path, padding_side="right"),
        peft_config=lora_config(cfg.lora),
    )
    t0 = time.time()
    trainer.train()
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    summary = {
        "rows": len(records),
        "steps": len(history),
        "loss_first": history[0]["loss"] if history else None,
        "loss_last": history[-1]["loss"] if history else None,
        "wall_s": round(time.time() - t0, 1),
        **batch_summary(trainer.args),
    }
    if is_main():
        _write_aggregator(trainer, Path(data_file).parent, out, cfg, history, summary)
    return summary


def sft_config(cfg: AggregatorCfg, out: Path, seed: int = 0, world: int | None = None):
    """The trl.SFTConfig of the aggregator: the recipe's global batch split over `world` processes (default: this
    launch's), cross-entropy on the answer tokens only, without gradient checkpointing unless `extra` asks for it
    (`cmva.agents.trainer_kwargs`)."""
    from trl import SFTConfig

    from cmva.agents import trainer_kwargs

    accum = cfg.gradient_accumulation_steps
    field = "aggregator.per_device_train_batch_size"
    return SFTConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=per_device_batch(cfg.per_device_train_batch_size * accum, accum, field, world),
        gradient_accumulation_steps=accum,
        max_length=cfg.max_length,
        completion_only_loss=True,  # cross-entropy on the target answer only
        **trainer_kwargs(seed, cfg.extra),
    )


def _write_aggregator(trainer, data_dir: Path, out: Path, cfg: AggregatorCfg, history: list, summary: dict) -> None:
    """Rank 0's artifact: the adapter, the ranking statistics the data was built with, log, summary, curve, card."""
    import shutil

    from cmva.ranking import RANKING_FILE

    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out)
    if (data_dir / RANKING_FILE).is_file():  # the answer order the data was built with travels along
        shutil.copy(data_dir / RANKING_FILE, out / RANKING_FILE)
    (out / "training_log.json").write_text(json.dumps(history, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot_loss(history, out / "loss.png")
    (out / "README.md").write_text(
        "---\nlibrary_name: peft\ntags: [cmva, aggregator, sft, lora]\n---\n# cmva contextual aggregator\n\n"
        "LoRA adapter trained with TRL SFTTrainer (loss on the answer tokens only) to answer a question from the "
        "moral agents' answers following the user's moral profile (CMVA-GS). It reads the answers ranked best for the "
        "profile first: `ranking.json` holds the statistics of that order (`cmva.ranking`).\n\n"
        f"rows {summary['rows']}, steps {summary['steps']}, loss {summary['loss_first']} → {summary['loss_last']}, "
        f"LoRA r={cfg.lora.r}, lr={cfg.learning_rate}, global batch {summary['global_batch']} "
        f"({summary['processes']} process(es)), wall {summary['wall_s']} s. Curve: `loss.png`.\n"
    )
    shutil.rmtree(out / "trainer", ignore_errors=True)


def _plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", ms=3)
    ax.set_xlabel("step"), ax.set_ylabel("cross-entropy (answer tokens)"), ax.grid(alpha=0.3)
    ax.set_title("aggregator SFT loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmva_answers(
    engine,
    questions: Sequence[str],
    profiles: Sequence[Mapping[str, float]],
    agent_outputs: Sequence[Mapping[str, str]],
    max_new_tokens: int,
    adapter: str = "aggregator",
    batch_size: int = 16,
    skip_zero_weight: bool = True,
    progress: str | None = None,
    ranker=None,
) -> list[str]:
    """CMVA-GS answers: the aggregator adapter on (question, profile, answers of the agents with c_i > 0), the
    answers in `ranker`'s order (`cmva.ranking.AnswerRanker`, the one saved with the adapter) or by weight."""
    shown = [
        {v: a[v] for v in active_values(p, skip_zero_weight) if v in a}
        for p, a in zip(profiles, agent_outputs, strict=True)
    ]
    orders = ranker.order(profiles, shown) if ranker is not None else [None] * len(shown)
    prompts = [aggregator_messages(q, p, s, o) for q, p, s, o in zip(questions, profiles, shown, orders, strict=True)]
    return engine.generate(
        prompts, [adapter] * len(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
