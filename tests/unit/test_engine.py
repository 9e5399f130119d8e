"""Mixed-adapter batches give the same tokens as each adapter alone; weighted merge is exact for LoRA."""

from __future__ import annotations

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
