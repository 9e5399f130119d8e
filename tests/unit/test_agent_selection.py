"""Dev-checkpoint selection of a moral agent (cmva.agent_selection) on a tiny random model."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState

from cmva.agent_selection import DevSelection


@pytest.fixture
def peft_model(tiny_base):
    from peft import LoraConfig, get_peft_model

    from cmva.models import load_causal_lm, load_tokenizer

    model = get_peft_model(load_causal_lm(tiny_base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    return model, load_tokenizer(tiny_base)


def lora_b(model) -> torch.Tensor:
    return next(p for n, p in model.named_parameters() if "lora_B" in n)


def scripted(scores):
    """A reward whose mean is the next scripted score at each judgement."""
    it = iter(scores)

    def reward(completions, **kw):
        s = next(it)
        return [s] * len(completions)

    return reward


def step(sel, model, n, max_steps=10):
    """Simulate training step `n`: the LoRA weights move, then the callback runs."""
    with torch.no_grad():
        lora_b(model).fill_(float(n))
    state, control = TrainerState(global_step=n, max_steps=max_steps), TrainerControl()
    return sel.on_step_end(None, state, control)


def test_restore_puts_back_the_best_judged_adapter(peft_model):
    model, tok = peft_model
    sel = DevSelection(model, tok, ["Is it fine to lie?", "Should I help?"], scripted([0.2, 0.5, 0.3, 0.1]), every=1)
    for n in range(1, 5):
        step(sel, model, n)
    assert lora_b(model).flatten()[0].item() == 4.0  # the last step's weights are live
    sel.restore(model)
    assert sel.best_step == 2 and torch.all(lora_b(model) == 2.0)  # the best step's weights are back
    assert [h["step"] for h in sel.history] == [1, 2, 3, 4]
    assert sel.summary()["dev_reward_best"] == pytest.approx(0.5)


def test_patience_stops_training_after_judgements_without_a_new_best(peft_model):
    model, tok = peft_model
    sel = DevSelection(model, tok, ["q"], scripted([0.5, 0.4, 0.3]), every=1, patience=2)
    assert not step(sel, model, 1).should_training_stop
    assert not step(sel, model, 2).should_training_stop
    assert step(sel, model, 3).should_training_stop


def test_judged_at_start_every_k_steps_and_at_the_last_step(peft_model):
    model, tok = peft_model
    sel = DevSelection(model, tok, ["q"], scripted([]), every=2, start=4)
    assert [s for s in range(1, 10) if sel.due(s, max_steps=9)] == [4, 6, 8, 9]


def test_judging_decodes_greedily_without_drawing_training_samples(peft_model):
    from cmva import sampling

    model, tok = peft_model
    sampling.install(model, seed=0)
    seen = []

    def reward(completions, **kw):
        seen.append(completions)
        return [0.0] * len(completions)

    sel = DevSelection(model, tok, ["Is it fine to lie?", "Why help a stranger?"], reward, every=1, max_new_tokens=5)
    model.train()
    sel.judge()
    sel.judge()
    assert seen[0] == seen[1] and len(seen[0]) == 2  # greedy: the same answers twice
    assert model.generate.rounds == 0  # no sampling round used: the RL's draws are unchanged
    assert model.training  # back in training mode


def test_no_dev_questions_is_refused(peft_model):
    model, tok = peft_model
    with pytest.raises(ValueError, match="dev questions"):
        DevSelection(model, tok, [], scripted([]), every=1)


def test_judged_answers_follow_the_bases_decoding_rule(peft_model):
    from cmva.decoding import Decoding

    model, tok = peft_model
    questions = ["Is it fine to lie?", "Why help a stranger?"]

    def ids(decoding):
        texts = DevSelection(
            model, tok, questions, scripted([]), every=1, max_new_tokens=16, decoding=decoding
        ).answers()
        return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    def repeats(row):
        grams = [tuple(row[i : i + 2]) for i in range(len(row) - 1)]
        return len(grams) - len(set(grams))

    assert ids(None) != ids(Decoding(no_repeat_ngram_size=2))  # the rule changes what is judged
    assert all(len(r) > 4 and repeats(r) == 0 for r in ids(Decoding(no_repeat_ngram_size=2)))
