"""Moral agents: the PT model fine-tuned by RL against one value's reward, with a KL penalty to the PT model.

TRL 1.x has no PPO; RLOO is used (TRL is configured, not subclassed). RLOO subtracts
`beta * KL(policy || PT)` from the reward before computing advantages, which is the paper's KL-penalised
objective, and its leave-one-out baseline needs no value network (PPO's critic). With a LoRA
`peft_config` the reference model is the base with the adapter disabled: no second model in memory.

Example:
    $ cmva train-agent --value care --base runs/cpu/base --rewards runs/cpu/rewards --out runs/cpu/agents/care
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cmva.config import AgentCfg, LoraCfg
from cmva.distributed import is_main, per_device_batch, world_size

log = logging.getLogger(__name__)


def lora_config(cfg: LoraCfg, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules, task_type=task_type
    )


def device_kwargs(extra: dict) -> dict:
    """Trainer settings for the device at hand, unless the recipe's `extra` sets them.

    TRL defaults to bf16; on a CPU without native bf16 every matmul falls back to a slow generic kernel
    (measured here: one RLOO step of the 135M model took minutes instead of seconds). Under torchrun the ranks talk
    over nccl between GPUs, gloo between CPU processes; every LoRA weight takes part in each forward pass, so DDP need
    not search the graph for unused parameters after each backward pass (its default with peft models).
    """
    import torch

    from cmva.distributed import backend

    cuda = torch.cuda.is_available()
    kw = {"use_cpu": not cuda, "bf16": cuda and torch.cuda.is_bf16_supported()}
    if world_size() > 1:
        kw |= {"ddp_backend": backend(), "ddp_find_unused_parameters": False}
    return {k: v for k, v in kw.items() if k not in extra}


def trainer_kwargs(seed: int, extra: dict) -> dict:
    """Settings every cmva trainer shares: per-step logs kept in memory, no checkpoints, device + recipe extras.

    Gradient checkpointing is off unless `extra` turns it on (TRL's SFT and RLOO defaults are on): it disables the KV
    cache in RLOO's generation (quadratic decode), and the 135M model's activations fit easily without it.
    """
    fixed = {"logging_steps": 1, "save_strategy": "no", "report_to": [], "seed": seed, "gradient_checkpointing": False}
    return {**fixed, **device_kwargs(extra), **extra}


def rloo_config(cfg: AgentCfg, out_dir: Path, seed: int = 0, world: int | None = None):
    """The trl.RLOOConfig for one agent; unknown `extra` keys fail with TRL's own message.

    The recipe's batch is global: each of the `world` processes (default: this launch's) generates and trains on
    its share, so one optimisation step sees per_device_train_batch_size × gradient_accumulation_steps completions
    (TRL's generation batch) of per_device_train_batch_size / num_generations prompts per micro-step, at any world.
    """
    from trl import RLOOConfig

    if cfg.per_device_train_batch_size % cfg.num_generations:
        raise ValueError(
            f"agent.per_device_train_batch_size ({cfg.per_device_train_batch_size}) must be a multiple of "
            f"agent.num_generations ({cfg.num_generations}): each prompt is sampled num_generations times"
        )
    if cfg.beta <= 0:
        raise ValueError("agent.beta must be > 0: moral agents keep a KL penalty to the PT model (the paper's setup)")
    accum = cfg.extra.get("gradient_accumulation_steps", 1)
    field = "agent.per_device_train_batch_size"
    per_device = per_device_batch(cfg.per_device_train_batch_size * accum, accum, field, world)
    fields = dict(
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        beta=cfg.beta,
        per_device_train_batch_size=per_device,
        num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
    )
    if cfg.repetition_weight:
        fields["reward_weights"] = [1.0, cfg.repetition_weight]  # reward_funcs: the value's, repetition_reward
    if clash := sorted(set(fields) & set(cfg.extra)):
        raise ValueError(
            f"set agent.{clash[0]} itself, not agent.extra.{clash[0]}: it is one of the agent's own fields"
        )
    return RLOOConfig(
        output_dir=str(out_dir / "trainer"),
        disable_tqdm=False,
        **fields,
        **trainer_kwargs(seed, cfg.extra),
    )


def train_agent(
    value: str,
    base_path: str | Path,
    rewards_path: str | Path,
    questions: list[str],
    out_dir: str | Path,
    cfg: AgentCfg | None = None,
    dtype: str = "float32",
    dev_questions: list[str] | None = None,
) -> dict:
    """RL-fine-tune a LoRA adapter on the PT model for one value; save adapter, model card, curves.

    Under torchrun every rank trains on its share of the recipe's global batch; rank 0 alone writes. With
    `cfg.select_every` the adapter kept is the step whose greedy answers to `dev_questions` scored best
    (cmva.agent_selection); otherwise the last step's. Seeded by `cfg.seed` (None: 0; `Profile.agent_for` fills in
    the profile's).

    Returns:
        Summary: first/last mean reward, last KL, steps, wall time, processes and global batch.
    """
    import time

    from datasets import Dataset
    from trl import RLOOTrainer

    from cmva import sampling
    from cmva.label_scoring import score_labelled_positions_only
    from cmva.models import load_causal_lm, load_tokenizer
    from cmva.prompts import agent_messages
    from cmva.rewards import RewardModel, repetition_reward, reward_function

    cfg = cfg or AgentCfg()
    seed = cfg.seed if cfg.seed is not None else 0
    out = Path(out_dir)
    if cfg.max_prompts:
        questions = questions[: cfg.max_prompts]
    if not questions:
        raise ValueError("no training questions for the agent")
    score_labelled_positions_only()  # log-probabilities of the completion tokens only, not the prompt's
    reward_model = RewardModel.load(rewards_path)
    dataset = Dataset.from_list([{"prompt": agent_messages(q)} for q in questions])
    tok = load_tokenizer(base_path)
    model = load_causal_lm(base_path, dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    reward = reward_function(reward_model, value, contrast=cfg.reward == "contrast")
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=[reward, repetition_reward] if cfg.repetition_weight else reward,
        args=rloo_config(cfg, out, seed),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=lora_config(cfg.lora),
    )
    sampling.install(trainer.model, seed)  # 2 processes sample what 1 process would (cmva.sampling)
    selection = _selection(trainer, tok, dev_questions, reward, cfg, base_path)
    t0 = time.time()
    trainer.train()
    if selection:
        selection.restore(trainer.model)
    history = _history(trainer.state.log_history, reward.__name__)
    summary = {
        "value": value,
        "steps": len(history),
        "reward_first": history[0]["reward"] if history else None,
        "reward_last": history[-1]["reward"] if history else None,
        "kl_last": history[-1]["kl"] if history else None,
        "wall_s": round(time.time() - t0, 1),
        "algorithm": "RLOO (trl)",
        "beta": cfg.beta,
        "reward": cfg.reward,
        "repetition_weight": cfg.repetition_weight,
        "seed": seed,
        **batch_summary(trainer.args),
        **(selection.summary() if selection else {}),
    }
    if is_main():
        _write_agent(trainer, out, value, cfg, history, summary)
    return summary


def _history(log_history: list[dict], reward_name: str) -> list[dict]:
    """Per logged step: the value's own reward (without the repetition term where there is one), KL, loss, and
    the mean repeated n-gram share of the completions where the repetition reward was trained against."""
    rows = []
    for h in log_history:
        if "reward" not in h:
            continue
        row = {"step": h["step"], "reward": h.get(f"rewards/{reward_name}/mean", h["reward"])}
        row |= {"kl": h.get("kl"), "loss": h.get("loss")}
        if (rep := h.get("rewards/repetition_reward/mean")) is not None:
            row["repeated_ngrams"] = abs(rep)  # the reward is minus the share
        rows.append(row)
    return rows


def _selection(trainer, tok, dev_questions: list[str] | None, reward, cfg: AgentCfg, base_path):
    """The dev-checkpoint selection callback, added to `trainer`, when the recipe asks for one (else None); its greedy
    answers follow the base's decoding rule, as the served ones do (cmva.decoding)."""
    if not cfg.select_every:
        return None
    from cmva.agent_selection import DevSelection
    from cmva.decoding import load_decoding

    questions = (dev_questions or [])[: cfg.select_questions]
    sel = DevSelection(
        trainer.model,
        tok,
        questions,
        reward,
        every=cfg.select_every,
        start=cfg.select_from,
        patience=cfg.select_patience,
        max_new_tokens=cfg.max_completion_length,
        decoding=load_decoding(base_path),
    )
    trainer.add_callback(sel)
    return sel


def batch_summary(args) -> dict:
    """Processes, per-device batch and the global batch of one optimisation step, from a trainer's arguments."""
    world = args.world_size
    return {
        "processes": world,
        "per_device_batch": args.per_device_train_batch_size,
        "global_batch": args.per_device_train_batch_size * world * args.gradient_accumulation_steps,
    }


def _write_agent(trainer, out: Path, value: str, cfg: AgentCfg, history: list[dict], summary: dict) -> None:
    """Rank 0's artifact: the adapter (safetensors + config only), log, summary, curves, model card."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(history, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(history, out / "reward_kl.png", title=f"{value} agent: RLOO reward and KL")
    write_model_card(out, value, cfg, summary)
    shutil.rmtree(out / "trainer", ignore_errors=True)


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Mean reward and KL per step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [h["step"] for h in history]
    for ax, key, color in zip(axes, ("reward", "kl"), ("tab:green", "tab:red"), strict=True):
        ax.plot(steps, [h[key] for h in history], marker="o", ms=3, color=color)
        ax.set_xlabel("step"), ax.set_ylabel(key), ax.grid(alpha=0.3)
    axes[0].set_title("mean reward"), axes[1].set_title("KL to the PT model")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_model_card(out: Path, value: str, cfg: AgentCfg, summary: dict) -> None:
    """A Hugging Face style README.md beside the adapter."""
    text = f"""---
library_name: peft
tags: [cmva, moral-alignment, rloo, lora, {value}]
---
# cmva moral agent: {value}

LoRA adapter on the cmva base model, fine-tuned with TRL's RLOO against the `{value}` value reward model
(P(text follows {value})), with a KL penalty (beta={cfg.beta}) to the pre-trained model.

| setting | value |
|---|---|
| reward | {"r_" + value + " − mean of the other values' rewards" if cfg.reward == "contrast" else "r_" + value} |
| repetition reward weight (minus the repeated word-4-gram share; 0: off) | {cfg.repetition_weight} |
| steps | {summary["steps"]} |
| learning rate, schedule | {cfg.learning_rate}, {cfg.lr_scheduler_type} |
| seed | {summary["seed"]} |
| global batch (completions) / generations per prompt | {summary["global_batch"]} / {cfg.num_generations} |
| processes × per-device batch | {summary["processes"]} × {summary["per_device_batch"]} |
| optimisation passes per generated batch | {cfg.num_iterations} |
| max completion tokens | {cfg.max_completion_length} |
| LoRA r / alpha | {cfg.lora.r} / {cfg.lora.alpha} |
| mean reward first → last step | {summary["reward_first"]} → {summary["reward_last"]} |
| KL at last step | {summary["kl_last"]} |
| step kept (dev-checkpoint selection) | {summary.get("selected_step") or "the last (no selection)"} |
| wall time (s) | {summary["wall_s"]} |

Curves: `reward_kl.png`. Per-step log: `training_log.json`.
"""
    (out / "README.md").write_text(text)
