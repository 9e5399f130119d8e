"""Dynamic int8 (cmva.quantize): base linear layers quantised, LoRA factors kept, adapters still act, logits close."""

from __future__ import annotations

import pytest
import torch

from cmva.engine import BASE, Engine
from cmva.prompts import agent_messages
from tests.unit.test_engine import _random_adapter

QS = ["Should I lend money to my brother?", "Is it rude to leave a party early?"]


def _logits(eng: Engine, adapter: str) -> torch.Tensor:
    enc = eng.tokenizer([eng.chat_prompt(agent_messages(QS[0]))], return_tensors="pt")
    with torch.inference_mode():
        if adapter == BASE:
            with eng.model.disable_adapter():
                return eng.model(**enc).logits[0, -1]
        eng.model.set_adapter(adapter)
        return eng.model(**enc).logits[0, -1]


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("q-adapters")
    return {n: _random_adapter(tiny_base, out / n, 20 + i) for i, n in enumerate(("care", "loyalty"))}


def test_int8_quantises_base_layers_and_keeps_lora_factors(tiny_base, adapters):
    eng = Engine(tiny_base, adapters, quantize="int8")
    dyn = torch.ao.nn.quantized.dynamic.Linear
    layer = eng.model.base_model.model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj.base_layer, dyn)  # wrapped by LoRA: its base quantised
    assert isinstance(layer.self_attn.o_proj, dyn)  # no LoRA on it: quantised itself
    assert type(layer.self_attn.q_proj.lora_A["care"]) is torch.nn.Linear  # the adapter stays float32
    assert isinstance(eng.model.get_output_embeddings(), dyn)
    emb = eng.model.get_input_embeddings()
    assert type(emb) is torch.nn.Embedding and emb.weight.dtype == torch.float32  # untied, not quantised


def test_int8_logits_close_to_float32_and_adapters_still_act(tiny_base, adapters):
    fp, q8 = Engine(tiny_base, adapters), Engine(tiny_base, adapters, quantize="int8")
    for a in ("care", BASE):
        ref, got = _logits(fp, a), _logits(q8, a)
        assert not torch.equal(ref, got)  # really quantised
        assert torch.corrcoef(torch.stack([ref, got]))[0, 1] > 0.99
    # the adapter's contribution survives quantisation of the layer under it
    delta_fp = _logits(fp, "care") - _logits(fp, BASE)
    delta_q8 = _logits(q8, "care") - _logits(q8, BASE)
    assert delta_fp.abs().max() > 1e-3
    assert torch.corrcoef(torch.stack([delta_fp, delta_q8]))[0, 1] > 0.9


def test_int8_fused_mixed_batch_matches_peft_mixed_batch(tiny_base, adapters):
    """The agents' batch takes the fused path (cmva.mixed_lora) over quantised base layers: the same logits as peft's
    mixed-adapter path over the same batch. (Not the same as each row alone: dynamic int8 scales the activations
    per tensor, i.e. over the whole batch; README, Serving.)"""
    eng = Engine(tiny_base, adapters, quantize="int8")
    fused = eng._mixed_lora(["care", "loyalty"])
    assert fused is not None
    texts = [eng.chat_prompt(agent_messages(q)) for q in (*QS, "Hi")]
    enc = eng.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    names = ["loyalty", BASE, "care"]
    with torch.inference_mode():
        peft_logits = eng.model(**enc, adapter_names=names).logits
        with fused.rows(names):
            fused_logits = eng.model(**enc).logits
    assert torch.allclose(fused_logits, peft_logits, atol=1e-4)
    out = eng.generate([agent_messages(q) for q in QS], ["care", "loyalty"], max_new_tokens=6, batch_size=2)
    assert eng.path_counts["fused-mixed"] == 1 and all(isinstance(t, str) for t in out)


def test_int8_weighted_merge_generates(tiny_base, adapters):
    eng = Engine(tiny_base, adapters, quantize="int8")
    name = eng.add_weighted_adapter("mix", {"care": 0.5, "loyalty": 0.5})
    assert eng.generate([agent_messages(QS[0])], [name], max_new_tokens=6)[0] is not None


@pytest.mark.parametrize("bad", ["int4", "fp8", "INT8"])
def test_unknown_quantize_is_refused_before_loading(bad, tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        Engine(tmp_path / "no-such-model", quantize=bad)


def test_weight_bytes_count_the_int8_weights(tiny_base):
    from cmva.quantize import weight_bytes

    fp, q8 = Engine(tiny_base), Engine(tiny_base, quantize="int8")
    emb = fp.model.get_input_embeddings().weight
    linear = weight_bytes(fp.model) - emb.numel() * 4 - sum(
        p.numel() * 4 for n, p in fp.model.named_parameters() if "norm" in n
    )
    # float32 linear layers → int8 (¼), plus the untied output layer's own int8 copy; embeddings and norms unchanged
    expected = weight_bytes(fp.model) - linear + linear // 4 + emb.numel()
    assert abs(weight_bytes(q8.model) - expected) < 0.01 * expected
