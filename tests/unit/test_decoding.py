"""The base's decoding rule: an answer never repeats its own n-grams, the prompt's stay allowed; every Engine
generation follows the rule saved with the base; a malformed rule file is refused naming it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cmva.decoding import DECODING_FILE, Decoding, answer_processors, load_decoding, save_decoding


def _repeats(ids: list[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_rule_round_trips_and_no_rule_writes_no_file(tmp_path):
    save_decoding(tmp_path, Decoding())
    assert not (tmp_path / DECODING_FILE).exists()
    assert load_decoding(tmp_path) == Decoding()
    save_decoding(tmp_path, Decoding(no_repeat_ngram_size=4))
    assert load_decoding(tmp_path).no_repeat_ngram_size == 4
    assert load_decoding(tmp_path).cpu_dtype is None
    save_decoding(tmp_path, Decoding(cpu_dtype="float16-weights"))
    assert load_decoding(tmp_path) == Decoding(cpu_dtype="float16-weights")


@pytest.mark.parametrize(
    "text", ["{not json", '{"no_repeat_ngram_size": -1}', '{"no_repeat_ngram": 4}', '{"cpu_dtype": "int8"}']
)
def test_malformed_rule_is_refused_naming_the_file(tmp_path, text):
    (tmp_path / DECODING_FILE).write_text(text)
    with pytest.raises(ValueError, match=DECODING_FILE):
        load_decoding(tmp_path)


def test_answer_ngrams_are_banned_prompt_ngrams_are_not():
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    prompt = [7, 8, 9]
    (rule,) = answer_processors(Decoding(no_repeat_ngram_size=3), prompt_len=len(prompt))
    # The answer so far: 4 5 6 4 5 → a 6 next would repeat the answer's own 3-gram (4 5 6).
    scores = rule(torch.tensor([prompt + [4, 5, 6, 4, 5]]), torch.zeros(1, 12))
    assert scores[0, 6] == -float("inf")
    assert (scores[0, [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11]] == 0).all()
    # The answer 7 8 copies the prompt: 9 stays allowed (transformers' own processor, prompt included, bans it).
    ids = torch.tensor([prompt + [7, 8]])
    assert rule(ids, torch.zeros(1, 12))[0, 9] == 0
    assert NoRepeatNGramLogitsProcessor(3)(ids, torch.zeros(1, 12))[0, 9] == -float("inf")
    assert answer_processors(Decoding(), prompt_len=3) == []


def _generated_ids(engine, prompts, monkeypatch) -> list[list[int]]:
    """The token ids the engine's model generated after the prompt, per row (recorded from its generate)."""
    seen: list[list[int]] = []
    generate = engine.model.generate

    def recording(**kw):
        out = generate(**kw)
        seen.extend(out[:, kw["input_ids"].shape[1] :].tolist())
        return out

    monkeypatch.setattr(engine.model, "generate", recording)
    engine.generate(prompts, max_new_tokens=24, batch_size=len(prompts))
    return seen


def test_engine_answers_follow_the_rule_saved_with_the_base(tiny_base, tmp_path, monkeypatch):
    from cmva.engine import Engine
    from cmva.prompts import agent_messages

    prompts = [agent_messages(q) for q in ("Should I lend money to my brother?", "Is it rude to leave early?")]
    free = _generated_ids(Engine(tiny_base), prompts, monkeypatch)
    assert sum(_repeats(row, 2) for row in free) > 0  # the random model loops: the rule has something to stop

    ruled_base = shutil.copytree(tiny_base, tmp_path / "base")
    (ruled_base / DECODING_FILE).write_text(json.dumps({"no_repeat_ngram_size": 2}))
    ruled = _generated_ids(Engine(ruled_base), prompts, monkeypatch)
    assert all(len(row) == 24 and _repeats(row, 2) == 0 for row in ruled)


def test_engine_generates_in_the_dtype_saved_with_the_base_unless_asked(tiny_base, tmp_path):
    """A base saved with `cpu_dtype: float16-weights` is generated from in it on a CPU (linear layers packed, as the
    evaluation and the servers do); an explicit dtype (a server's `--dtype`, `evaluate.dtype`) still wins; a base
    without one generates in float32."""
    from cmva.cpu_linear import Float16WeightLinear
    from cmva.engine import Engine
    from cmva.prompts import agent_messages

    base = shutil.copytree(tiny_base, tmp_path / "base")
    save_decoding(base, Decoding(cpu_dtype="float16-weights"))
    own = Engine(base)
    assert own.dtype == "float16-weights" and isinstance(own.model.get_output_embeddings(), Float16WeightLinear)
    asked = Engine(base, dtype="float32", exact_dtype=True)
    assert asked.dtype == "float32" and type(asked.model.get_output_embeddings()) is torch.nn.Linear
    assert Engine(tiny_base).dtype == "float32"
    prompt = [agent_messages("Should I lend money to my brother?")]
    assert own.generate(prompt, max_new_tokens=8) == Engine(base).generate(prompt, max_new_tokens=8)
