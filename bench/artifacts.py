"""Artifacts for the serving benchmarks: a trained run if there is one, else the same shapes built fast.

Serving speed and memory depend on the shapes (base model, LoRA rank and targets, reward encoder), not on
what the adapters learned, so without a trained run the bench builds: the real base import, the real
reward models (≈ 20 s), and freshly initialised LoRA adapters of the recipe's rank (non-zero B, so they
cost exactly what trained ones cost).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

WORK = Path(__file__).parent / ".work"


def is_complete(art: Path, values: list[str]) -> bool:
    need = [art / "base" / "config.json", art / "rewards" / "heads.safetensors", art / "aggregator"]
    need += [art / "agents" / v for v in values]
    return all(p.exists() for p in need) and all(
        (art / "agents" / v / "adapter_model.safetensors").is_file() for v in values
    )


def serving_artifacts(requested: str | None, values: list[str], profile: str = "cpu") -> Path:
    """`requested` if given; else runs/<profile> when complete; else bench/.work/serving-<profile>, built once."""
    if requested:
        art = Path(requested)
        if not is_complete(art, values):
            raise FileNotFoundError(f"{art}: not a complete run (base/, rewards/, agents/<value>/, aggregator/)")
        return art
    for art in (Path("runs") / profile, WORK / f"serving-{profile}"):
        if is_complete(art, values):
            return art
    return build_shape_artifacts(WORK / f"serving-{profile}", values, profile)


def build_shape_artifacts(out: Path, values: list[str], profile: str) -> Path:
    from peft import get_peft_model

    from cmva.agents import lora_config
    from cmva.config import load_profile
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
    from cmva.models import import_base, load_causal_lm
    from cmva.rewards import train_rewards
    from cmva.values import resolve_values

    prof = load_profile(profile)
    log.info("building serving artifacts of the %s profile's shapes in %s", profile, out)
    if not (out / "base" / "config.json").is_file():
        import_base(out / "base", prof.base.source)
    if not (out / "rewards" / "heads.safetensors").is_file():
        # Serving benches need the reward model's shape, not its quality: a few fine-tuning steps.
        cheap = prof.rewards.model_copy(update={"epochs": 1, "max_train_texts": 128})
        train_rewards(out / "rewards", SAMPLE_SOCIALCHEM, SAMPLE_MIC, resolve_values(values), cheap)
    for name, lora in [(f"agents/{v}", prof.agent.lora) for v in values] + [("aggregator", prof.aggregator.lora)]:
        if (out / name / "adapter_model.safetensors").is_file():
            continue
        cfg = lora_config(lora)
        cfg.init_lora_weights = False  # random A and B: the adapter is active, as a trained one is
        get_peft_model(load_causal_lm(out / "base"), cfg).save_pretrained(out / name)
    return out
