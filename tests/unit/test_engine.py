"""Mixed-adapter batches give the same tokens as each adapter alone; weighted merge is exact for LoRA."""

from __future__ import annotations

import pytest
import torch

from cmva.engine import BASE, Engine
from cmva.prompts import agent_messages


def _random_adapter(base_path, out, seed):
    from peft import LoraConfig, get_peft_model

    from cmva.models import load_causal_lm

    torch.manual_seed(seed)
    model = get_peft_model(
        load_causal_lm(base_path),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False),
    )
    model.save_pretrained(out)
    return out


def test_mixed_batch_equals_single_adapter_runs(tiny_base, tmp_path):
    adapters = {n: _random_adapter(tiny_base, tmp_path / n, i) for i, n in enumerate(("care", "loyalty"))}
    eng = Engine(tiny_base, adapters)
    qs = ["Should I lend money to my brother?", "Is it rude to leave a party early?", "Can I skip church this week?"]
    names = ["care", "loyalty", BASE]
    mixed = eng.generate([agent_messages(q) for q in qs], names, max_new_tokens=12, batch_size=3)
    alone = [eng.generate([agent_messages(q)], [n], max_new_tokens=12)[0] for q, n in zip(qs, names, strict=True)]
    assert mixed == alone
    # The adapters really change the output (otherwise the test above proves nothing).
    assert len({eng.generate([agent_messages(qs[0])], [n], max_new_tokens=12)[0] for n in names}) > 1


def test_weighted_merge_is_exact_lora_sum(tiny_base, tmp_path):
    adapters = {n: _random_adapter(tiny_base, tmp_path / n, 10 + i) for i, n in enumerate(("care", "fairness"))}
    eng = Engine(tiny_base, adapters)
    name = eng.add_weighted_adapter("mix", {"care": 0.75, "fairness": 0.25})
    layer = eng.model.base_model.model.model.layers[0].self_attn.q_proj

    def delta(a):
        return layer.lora_B[a].weight @ layer.lora_A[a].weight * layer.scaling[a]

    expected = 0.75 * delta("care") + 0.25 * delta("fairness")
    assert torch.allclose(delta(name), expected, atol=1e-6)


def test_batches_bounded_by_padded_tokens():
    from cmva.engine import plan_batches

    lengths = [10] * 6 + [200, 210]
    batches = plan_batches(list(range(8)), lengths, batch_size=4, max_tokens=400, new_tokens=20)
    assert sorted(i for b in batches for i in b) == list(range(8))  # every row once, order kept
    assert [i for b in batches for i in b] == list(range(8))
    assert all(len(b) <= 4 for b in batches)
    # The long rows do not share a batch with short ones, and each batch's padded size stays within budget
    # (a single row may exceed it).
    for b in batches:
        assert len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 20) <= 400
    assert [6] in batches and [7] in batches


def test_long_prompt_batches_give_same_text(tiny_base):
    eng = Engine(tiny_base)
    prompts = [agent_messages("Is it fair? " * k) for k in (1, 2, 40, 3)]
    budget = eng.generate(prompts, max_new_tokens=6, batch_size=4, max_batch_tokens=64)
    one_by_one = [eng.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert budget == one_by_one


def test_merge_of_one_adapter_is_that_adapter(tiny_base, tmp_path):
    eng = Engine(tiny_base, {"care": _random_adapter(tiny_base, tmp_path / "care", 3)})
    assert eng.add_weighted_adapter("only-care", {"care": 1.0, "fairness": 0.0}) == "care"
    assert eng.add_weighted_adapter("none", {"care": 0.0}) == BASE
    assert "only-care" not in eng.adapters


def test_fused_mixed_batch_matches_peft_mixed_batch(tiny_base, tmp_path):
    adapters = {n: _random_adapter(tiny_base, tmp_path / n, 20 + i) for i, n in enumerate(("care", "loyalty"))}
    eng = Engine(tiny_base, adapters)
    fused = eng._mixed_lora(["care", "loyalty"])
    assert fused is not None
    texts = [eng.chat_prompt(agent_messages(q)) for q in ("Is it fair?", "Should I stay loyal to my team?", "Hi")]
    enc = eng.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    names = ["loyalty", BASE, "care"]
    with torch.inference_mode():
        peft_logits = eng.model(**enc, adapter_names=names).logits
        with fused.rows(names):
            fused_logits = eng.model(**enc).logits
        with eng.model.disable_adapter():
            base_logits = eng.model(**enc).logits
    assert torch.allclose(fused_logits, peft_logits, atol=1e-5)
    assert torch.allclose(fused_logits[1], base_logits[1], atol=1e-5)  # the __base__ row
    assert not torch.allclose(fused_logits[0], base_logits[0], atol=1e-3)  # the adapters change the others
    # peft's LoRA weights are views into the concatenated factors: nothing stored twice.
    layer = fused.layers[0]
    a = layer.module.lora_A["loyalty"].weight
    assert a.untyped_storage().data_ptr() == layer.a_cat.untyped_storage().data_ptr()


def test_weighted_merge_after_fused_mixed_batch(tiny_base, tmp_path):
    """The fused path (built inside inference mode at the first mixed batch) leaves peft able to add, generate
    with and delete adapters, and the merged adapter gives the same text as on an engine that never fused."""
    adapters = {n: _random_adapter(tiny_base, tmp_path / n, 30 + i) for i, n in enumerate(("care", "fairness"))}
    qs = ["Should I lend money to my brother?", "Is it rude to leave a party early?"]
    weights = {"care": 0.6, "fairness": 0.4}

    eng = Engine(tiny_base, adapters)
    eng.generate([agent_messages(q) for q in qs], ["care", "fairness"], max_new_tokens=6, batch_size=2)
    assert eng._mixed is not None  # the mixed batch went through the fused path
    name = eng.add_weighted_adapter("mix", weights)
    after_fused = eng.generate([agent_messages(q) for q in qs], [name, name], max_new_tokens=10)
    # A mixed batch with the merged adapter in it rebuilds the fused path over the new adapter set.
    mixed = eng.generate([agent_messages(q) for q in qs], [name, "care"], max_new_tokens=10, batch_size=2)

    plain = Engine(tiny_base, adapters)
    plain.add_weighted_adapter("mix", weights)
    expected = plain.generate([agent_messages(q) for q in qs], ["mix", "mix"], max_new_tokens=10)
    assert after_fused == expected
    assert mixed[0] == expected[0]
    assert mixed[1] == plain.generate([agent_messages(qs[1])], ["care"], max_new_tokens=10)[0]
    eng.model.delete_adapter(name)  # peft can still delete what was fused
    assert name not in eng.model.peft_config


def test_fused_path_covers_batch_within_rank_cap(tiny_base, tmp_path):
    adapters = {n: _random_adapter(tiny_base, tmp_path / n, 40 + i) for i, n in enumerate(("care", "fairness"))}
    eng = Engine(tiny_base, adapters)
    first = eng._mixed_lora(["care", BASE])
    assert eng._mixed_for == {"care"}
    grown = eng._mixed_lora(["fairness", "care"])
    assert grown is not first and eng._mixed_for == {"care", "fairness"}
    assert eng._mixed_lora(["fairness", BASE]) is grown  # a covered batch reuses the fused path
    eng.max_fused_rank = 4  # one rank-4 adapter fits, two do not
    assert eng._mixed_lora(["care"]) is grown
    merged = eng.add_weighted_adapter("mix", {"care": 0.5, "fairness": 0.5})  # rank 8: over the cap alone
    assert eng._mixed_lora([merged, "care"]) is None
    qs = ["Should I lend money to my brother?", "Is it rude to leave a party early?"]
    peft_path = eng.generate([agent_messages(q) for q in qs], [merged, "care"], max_new_tokens=8, batch_size=2)
    alone = [
        eng.generate([agent_messages(q)], [n], max_new_tokens=8)[0] for q, n in zip(qs, [merged, "care"], strict=True)
    ]
    assert peft_path == alone


def test_complete_counts_prompt_and_generated_tokens(tiny_base):
    eng = Engine(tiny_base)
    msgs = [agent_messages(q) for q in ("Short?", "A much longer question about lending money to a brother?")]
    batched = eng.complete(msgs, max_new_tokens=12, batch_size=2)  # left-padded together
    assert batched == [eng.complete([m], max_new_tokens=12)[0] for m in msgs]
    for m, c in zip(msgs, batched, strict=True):
        assert c.prompt_tokens == len(eng.tokenizer(eng.chat_prompt(m), add_special_tokens=False)["input_ids"])
        assert 1 <= c.completion_tokens <= 12
    assert [c.completion_tokens for c in eng.complete(msgs, max_new_tokens=5, min_new_tokens=5)] == [5, 5]


def test_bfloat16_engine_on_cpu_close_to_float32_and_adapters_still_act(native_bf16, tiny_base, tmp_path):
    """`exact_dtype` (a server's `--dtype bfloat16`, `evaluate.dtype`) loads the base in bfloat16 on a CPU too; the
    logits stay close to float32's and the adapters still change them."""
    adapters = {"care": _random_adapter(tiny_base, tmp_path / "care", 50)}
    fp = Engine(tiny_base, adapters)
    bf = Engine(tiny_base, adapters, dtype="bfloat16", exact_dtype=True)
    assert bf.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert fp.model.get_input_embeddings().weight.dtype == torch.float32
    assert Engine(tiny_base, dtype="bfloat16").model.dtype == torch.float32  # a run's base.dtype: float32 on a CPU
    _close_to_float32_with_adapters_acting(fp, bf)
    mixed = bf.generate([agent_messages("Is it fair?")] * 2, ["care", BASE], max_new_tokens=6, batch_size=2)
    assert len(mixed) == 2


def _last_logits(eng, adapter):
    enc = eng.tokenizer([eng.chat_prompt(agent_messages("Should I lend money?"))], return_tensors="pt")
    with torch.inference_mode():
        if adapter == BASE:
            with eng.model.disable_adapter():
                return eng.model(**enc).logits[0, -1].float()
        eng.model.set_adapter(adapter)
        return eng.model(**enc).logits[0, -1].float()


def _close_to_float32_with_adapters_acting(fp, other):
    """`other`'s next-token logits differ from float32's but correlate with them, and its adapter moves them as the
    float32 one does."""
    for a in ("care", BASE):
        ref, got = _last_logits(fp, a), _last_logits(other, a)
        assert not torch.equal(ref, got) and torch.corrcoef(torch.stack([ref, got]))[0, 1] > 0.99
    d_fp = _last_logits(fp, "care") - _last_logits(fp, BASE)
    d_other = _last_logits(other, "care") - _last_logits(other, BASE)
    assert d_fp.abs().max() > 1e-3 and torch.corrcoef(torch.stack([d_fp, d_other]))[0, 1] > 0.9


def test_float16_weights_engine_packs_the_base_linears_and_keeps_adapters_float32(tiny_base, tmp_path):
    """`float16-weights` (CPU): every linear layer of the base and the output head packed as float16 for fbgemm, the
    LoRA factors still float32; logits close to float32's; mixed batches and a weighted merge made after packing
    work; the same engine twice gives the same greedy answers."""
    from cmva.cpu_linear import Float16WeightLinear

    adapters = {v: _random_adapter(tiny_base, tmp_path / v, seed) for v, seed in (("care", 50), ("loyalty", 51))}
    fp = Engine(tiny_base, adapters)
    f16 = Engine(tiny_base, adapters, dtype="float16-weights", exact_dtype=True)
    linears = [n for n, m in fp.model.named_modules() if type(m) is torch.nn.Linear and ".lora_" not in n]
    packed = [n for n, m in f16.model.named_modules() if isinstance(m, Float16WeightLinear)]
    assert packed == linears and len(packed) > 2
    assert f16.model.get_output_embeddings().weight.dtype == torch.float32  # what peft reads for adapters' dtype
    lora = [m for n, m in f16.model.named_modules() if n.endswith("lora_A.care")]
    assert lora and all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in lora)
    _close_to_float32_with_adapters_acting(fp, f16)
    questions = [agent_messages("Is it fair?"), agent_messages("Should I lend money?")]
    merged = f16.add_weighted_adapter("merge", {"care": 0.5, "loyalty": 0.5})
    names = ["care", "loyalty", merged, BASE]
    mixed = f16.generate(questions * 2, names, max_new_tokens=6, batch_size=4)
    again = Engine(tiny_base, adapters, dtype="float16-weights", exact_dtype=True)
    again.add_weighted_adapter("merge", {"care": 0.5, "loyalty": 0.5})
    assert again.generate(questions * 2, names, max_new_tokens=6, batch_size=4) == mixed


def test_float16_weights_are_refused_on_a_gpu():
    from cmva.models import generation_dtype

    assert generation_dtype("float16-weights", cuda=False) == "float16-weights"
    with pytest.raises(ValueError, match="float16-weights is for CPUs"):
        generation_dtype("float16-weights", cuda=True)


@pytest.mark.parametrize("bad", ["int8", "float16", "fp32"])
def test_unknown_generation_dtype_is_refused_before_loading(bad, tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16-weights"):
        Engine(tmp_path / "no-such-model", dtype=bad, exact_dtype=True)
