"""Training data and fine-tuning for the value classifiers (encoder and heads trained together).

Labels per (text, value), the paper's binarization (0 if judgment < 0 else 1) on rows about the value, and
— so that the five rewards tell the foundations apart — 0 on rows about other foundations only
(`other_foundation_negatives`): "being kind to a stranger" follows care, not authority. An answer that is good
in general is then not thereby good for every value.

Example:
    >>> texts, y, m = socialchem_targets([{"action": "a", "label": 1, "foundations": ["care"]}], ["care", "loyalty"])
    >>> y.tolist(), m.tolist()
    ([[1.0, 0.0]], [[1.0, 1.0]])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


def _row_targets(about: Sequence[str], label: int, values: Sequence[str], other_negatives: bool):
    y = [float(label) if v in about else 0.0 for v in values]
    m = [1.0 if (v in about or other_negatives) else 0.0 for v in values]
    return y, m


def socialchem_targets(
    rows: Sequence[Mapping], values: Sequence[str], other_negatives: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(texts, labels [n, V], mask [n, V]) from SocialChem rows: label on the row's foundations, 0 elsewhere."""
    texts, ys, ms = [], [], []
    for r in rows:
        if not set(r["foundations"]) & set(values):
            continue  # a row about none of the run's values (e.g. liberty when it is not configured)
        y, m = _row_targets(r["foundations"], r["label"], values, other_negatives)
        texts.append(r["action"]), ys.append(y), ms.append(m)
    return (
        texts,
        np.array(ys, dtype=np.float32).reshape(-1, len(values)),
        np.array(ms, dtype=np.float32).reshape(-1, len(values)),
    )


def mic_reply_targets(
    rows: Sequence[Mapping], values: Sequence[str], other_negatives: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """MIC replies as whole-answer examples: agreeing reply → 1, disagreeing → 0, worker answer → 1, on the
    row's foundations (neutral replies are left out)."""
    texts, ys, ms = [], [], []
    for r in rows:
        about = [v for v in r["moral"] if v in values]
        if not about:
            continue
        labelled = [(r["answer"], 1)] if r["a_agrees"] == 2 else [(r["answer"], 0)] if r["a_agrees"] == 0 else []
        if r["worker_answer"]:
            labelled.append((r["worker_answer"], 1))
        for text, label in labelled:
            y, m = _row_targets(about, label, values, other_negatives)
            texts.append(text), ys.append(y), ms.append(m)
    return (
        texts,
        np.array(ys, dtype=np.float32).reshape(-1, len(values)),
        np.array(ms, dtype=np.float32).reshape(-1, len(values)),
    )


def balanced_weights(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-element loss weights: each value's positives and negatives weigh half each (masked cells 0)."""
    pos = (y * m).sum(0) / np.maximum(m.sum(0), 1)
    pos = np.clip(pos, 1e-3, 1 - 1e-3)
    return (m * np.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))).astype(np.float32)


def fit_heads(x: np.ndarray, y: np.ndarray, m: np.ndarray, epochs: int = 300, lr: float = 0.1, l2: float = 1e-4):
    """Masked, class-balanced logistic heads on fixed embeddings by full-batch Adam: (weight [V, d], bias [V])."""
    import torch

    xt, yt, wt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(balanced_weights(y, m))
    w = torch.zeros(y.shape[1], x.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w.T + b, yt, reduction="none")
        ((loss * wt).sum() / wt.sum() + l2 * (w**2).sum()).backward()
        opt.step()
    return w.detach().numpy(), b.detach().numpy()


def finetune(
    encoder,
    texts: Sequence[str],
    y: np.ndarray,
    m: np.ndarray,
    epochs: int,
    learning_rate: float,
    head_learning_rate: float,
    batch_size: int,
    seed: int = 0,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune the sentence encoder (in place) and a linear head per value with class-balanced, masked BCE.

    Args:
        init: Starting heads (weight, bias), e.g. `fit_heads` on the frozen embeddings (computed here if None).

    Returns the heads' (weight [V, d], bias [V]) over the encoder's unit-normalised embeddings, the form
    `RewardModel` scores with.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from cmva.rewards import embed

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = encoder.device
    head = torch.nn.Linear(encoder.get_sentence_embedding_dimension(), y.shape[1]).to(device)
    w0, b0 = init if init is not None else fit_heads(embed(encoder, texts), y, m)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w0)), head.bias.copy_(torch.from_numpy(b0))
    opt = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": learning_rate}, {"params": head.parameters(), "lr": head_learning_rate}]
    )
    steps = epochs * -(-len(texts) // batch_size)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=max(steps // 10, 1), num_training_steps=steps)
    yt, wt = torch.from_numpy(y), torch.from_numpy(balanced_weights(y, m))
    encoder.train()
    bar = tqdm(total=steps, desc="rewards: fine-tune encoder", unit="step")
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            feats = {
                k: v.to(device) if hasattr(v, "to") else v for k, v in encoder.tokenize([texts[i] for i in idx]).items()
            }
            logits = head(encoder(feats)["sentence_embedding"])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[idx].to(device), reduction="none")
            loss = (loss * wt[idx].to(device)).sum() / wt[idx].sum().clamp(min=1e-6)
            opt.zero_grad()
            loss.backward()
            opt.step(), sched.step()
            bar.update(1), bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    encoder.eval()
    return head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy()
