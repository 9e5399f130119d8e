"""Row-keyed sampling (cmva.sampling): an exact sample of the warped softmax, the same token for the same row
whatever batch the row is generated in, and greedy decoding untouched."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from cmva.sampling import RowKeyedSampler, install, warpers


def _draw(scores: torch.Tensor, round_: int, offset: int, cfg: GenerationConfig) -> torch.Tensor:
    sampler = RowKeyedSampler(seed=0, round_=round_, row_offset=offset, prompt_len=3, warps=warpers(cfg))
    return sampler(torch.zeros(scores.shape[0], 5, dtype=torch.long), scores.clone()).argmax(-1)


def test_draws_follow_the_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    cfg = GenerationConfig(do_sample=True, temperature=0.7, top_k=0)
    n = 4000
    tokens = torch.cat([_draw(logits, r, 0, cfg) for r in range(n)])
    freq = torch.bincount(tokens, minlength=4).double() / n
    expected = torch.softmax(logits[0].double() / 0.7, -1)
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)


def test_top_k_keeps_only_the_k_best():
    logits = torch.tensor([[2.0, 1.9, 1.8, 1.7]])
    cfg = GenerationConfig(do_sample=True, top_k=2)
    assert {int(_draw(logits, r, 0, cfg)) for r in range(200)} == {0, 1}


def test_a_row_gets_the_same_token_in_any_split_of_the_batch():
    torch.manual_seed(1)
    logits = torch.randn(8, 50)
    cfg = GenerationConfig(do_sample=True)
    whole = _draw(logits, 3, 0, cfg)
    halves = torch.cat([_draw(logits[:4], 3, 0, cfg), _draw(logits[4:], 3, 4, cfg)])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole, _draw(logits, 4, 0, cfg))  # another round: other noise


def test_installed_generate_is_reproducible_and_leaves_greedy_alone(tiny_base):
    from cmva.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(tiny_base), load_causal_lm(tiny_base)
    ids = tok(["Is it fine to lie?", "Should I help?"], return_tensors="pt", padding=True)
    kw = dict(**ids, max_new_tokens=6, pad_token_id=tok.pad_token_id)
    greedy = model.generate(**kw, do_sample=False)
    install(model, seed=0)
    assert torch.equal(model.generate(**kw, do_sample=False), greedy)
    sampled = GenerationConfig(do_sample=True, max_new_tokens=6, pad_token_id=tok.pad_token_id)
    first = model.generate(**ids, generation_config=sampled)
    install(model, seed=0)  # a fresh round counter, same seed: the same completions; torch's RNG plays no part
    torch.manual_seed(123)
    assert torch.equal(model.generate(**ids, generation_config=sampled), first)
