"""Base-model import and the tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from cmva.models import import_base, load_causal_lm, load_tokenizer


def _generate(path, n=8):
    tok = load_tokenizer(path)
    model = load_causal_lm(path)
    msgs = [[{"role": "user", "content": q}] for q in ("Should I call my mom?", "Is it fine to skip a class?")]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok, out[:, enc["input_ids"].shape[1] :]


def test_tiny_model_generates_with_real_tokenizer(tiny_base):
    tok, new = _generate(tiny_base)
    assert new.shape == (2, 8)
    assert len(tok) == 49152  # SmolLM2's vocabulary
    assert "<|im_start|>" in tok.chat_template
    assert (tiny_base / "model.safetensors").is_file()
    assert sum(p.numel() for p in load_causal_lm(tiny_base).parameters()) < 5_000_000


def test_import_from_hf_dir(tiny_base, tmp_path):
    out = import_base(tmp_path / "base", source=str(tiny_base))
    a, b = load_causal_lm(tiny_base), load_causal_lm(out)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert json.loads((out / "cmva_base.json").read_text())["kind"] == "hf"


def test_import_rejects_unknown_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a .gguf file"):
        import_base(tmp_path / "b", source=str(tmp_path / "missing"))


@pytest.mark.slow
def test_import_smollm2_gguf_trains_and_generates(tmp_path):
    out = import_base(tmp_path / "base")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert not list(out.glob("*.gguf"))
    tok, new = _generate(out, n=20)
    text = tok.batch_decode(new, skip_special_tokens=True)
    assert all(len(t.split()) >= 3 for t in text), text
    model = load_causal_lm(out)
    model.train()
    enc = tok(["Kindness matters."], return_tensors="pt")
    loss = model(**enc, labels=enc["input_ids"]).loss
    loss.backward()  # a plain checkpoint: gradients flow (a GGUF-loaded model refuses training)
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None
