"""TRL's fused LM head on a CPU: with cmva.label_scoring it projects only the labelled positions, same log-probs."""

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

from cmva.label_scoring import score_labelled_positions_only  # noqa: E402


def _scored_rows(tiny_base, monkeypatch) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Rows handed to TRL's chunked log-prob kernel and the per-token log-probs of one fused forward on the tiny
    model: 2 rows × 12 tokens, labels on the last 3 tokens of each (the rest -100, as the prompt's in SFT)."""
    from cmva.models import load_causal_lm

    seen: list[int] = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        seen.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    model = load_causal_lm(tiny_base, "float32").eval()
    trl_utils.add_fused_lm_head(model)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    return seen, out.log_probs, out.label_mask


def test_cpu_scores_every_position_without_and_only_labelled_ones_with(tiny_base, monkeypatch):
    from trl.kernels.chunked_logprob import _use_triton

    # TRL's own switch (a training run earlier in this session may have patched it); restored after the test
    monkeypatch.setattr(trl_utils, "_use_triton", _use_triton)
    full_rows, full, mask = _scored_rows(tiny_base, monkeypatch)
    assert full_rows == [2 * 11]  # TRL's own CPU path: every shifted position, prompt included

    assert score_labelled_positions_only() is True
    assert score_labelled_positions_only() is True  # idempotent: wrapped once
    assert trl_utils._use_triton.__closure__[0].cell_contents is _use_triton  # wraps TRL's own, once
    rows, compact, mask2 = _scored_rows(tiny_base, monkeypatch)
    assert rows == [int(mask.sum())] == [2 * 3]
    assert torch.equal(mask, mask2)
    torch.testing.assert_close(compact[mask], full[mask], rtol=1e-5, atol=1e-5)
    assert float(compact[~mask].abs().sum()) == 0.0  # unlabelled positions stay zero, as TRL's own path leaves them


def test_missing_switch_warns_and_changes_nothing(monkeypatch):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.warns(UserWarning, match="every position"):
        assert score_labelled_positions_only() is False
    assert not hasattr(trl_utils, "_use_triton")


def test_aggregator_sft_checkpoints_activations_only_when_asked(tmp_path):
    from cmva.aggregator import sft_config
    from cmva.config import AggregatorCfg

    assert sft_config(AggregatorCfg(), tmp_path).gradient_checkpointing is False  # TRL's SFT default is True
    on = AggregatorCfg(extra={"gradient_checkpointing": True, "weight_decay": 0.1})
    cfg = sft_config(on, tmp_path)
    assert cfg.gradient_checkpointing is True and cfg.weight_decay == 0.1
