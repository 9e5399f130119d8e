"""Reward models: fine-tuning changes the encoder; trained on the sample corpus they beat chance on its held-out
split; labels make the rewards tell foundations apart."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from cmva.config import RewardsCfg
from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
from cmva.reward_training import balanced_weights, mic_reply_targets, socialchem_targets
from cmva.rewards import (
    SECOND_DIR,
    RewardModel,
    binary_metrics,
    default_encoder_path,
    repetition_reward,
    reward_function,
    train_rewards,
)
from cmva.text_metrics import looping_share, repeated_ngram_share

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rewards")
    # A seeded half and two epochs keep this near 2 min on 2 cores (the cpu recipe: all rows, 3 epochs).
    metrics = train_rewards(out, SAMPLE_SOCIALCHEM, SAMPLE_MIC, cfg=RewardsCfg(epochs=2, max_train_texts=1280))
    return out, metrics


def test_training_changes_the_encoders_weights(reward_dir):
    path, metrics = reward_dir
    before = load_file(str(default_encoder_path() / "model.safetensors"))
    after = load_file(str(path / "encoder" / "model.safetensors"))
    weights = [k for k in after if k in before and before[k].dtype.kind == "f"]
    assert len(weights) >= 50
    changed = [k for k in weights if not np.allclose(before[k], after[k])]
    assert len(changed) > len(weights) // 2, f"only {len(changed)} of {len(weights)} encoder tensors changed"
    assert metrics["_training"]["texts"] == 1280


def test_rewards_beat_chance_on_sample_test_split(reward_dir):
    _, metrics = reward_dir
    assert set(metrics) == {*VALUES, "_training", "_pairwise_correlation", "_second_set_accuracy"}
    for value in VALUES:
        m = metrics[value]
        assert m["n"] >= 30, value
        # Chance is ~0.5 (both labels ≥ 30 % per value, balanced training): demand a clear margin.
        assert m["balanced_accuracy"] > 0.55, (value, m)
        assert m["vs_other_foundations"]["n"] > m["n"] and -1 <= m["length_spearman"] <= 1
    assert sum(metrics[v]["accuracy"] for v in VALUES) / 5 > 0.65


def test_contrast_reward_is_the_values_score_minus_the_others_mean(reward_dir):
    path, _ = reward_dir
    rm = RewardModel.load(path)
    texts = ["I'd stay and help your neighbour.", "Respect your elders and follow the rules."]
    s = rm.score(texts)
    got = reward_function(rm, "care", contrast=True)(completions=texts)
    want = [s["care"][k] - np.mean([s[v][k] for v in VALUES if v != "care"]) for k in range(2)]
    assert got == pytest.approx(want, abs=1e-6) and got != pytest.approx(s["care"])


def test_second_set_is_the_shipped_encoder_with_its_own_heads(reward_dir):
    path, metrics = reward_dir
    second = RewardModel.load(path / SECOND_DIR)
    shipped = load_file(str(default_encoder_path() / "model.safetensors"))
    kept = load_file(str(path / SECOND_DIR / "encoder" / "model.safetensors"))
    assert all(np.array_equal(shipped[k], kept[k]) for k in shipped if k in kept)
    assert not np.allclose(second.weight, RewardModel.load(path).weight)
    assert set(metrics["_second_set_accuracy"]) == set(VALUES)
    text = ["I'd stay and help your neighbour."]
    assert second.score(text)["care"] != pytest.approx(RewardModel.load(path).score(text)["care"])


def test_saved_model_scores_in_unit_interval_and_separates(reward_dir):
    path, _ = reward_dir
    rm = RewardModel.load(path)
    good = "I'd check on your elderly neighbour and bring her some soup; being kind costs you nothing."
    bad = "Let him suffer, it's not your problem. Honestly kicking the dog shut it up fast."
    scores = rm.score([good, bad])
    assert all(0.0 <= s <= 1.0 for v in scores.values() for s in v)
    assert scores["care"][0] > scores["care"][1]
    f = reward_function(rm, "care")
    assert f(completions=[[{"role": "assistant", "content": good}]]) == pytest.approx([scores["care"][0]], abs=1e-5)
    with pytest.raises(ValueError, match="no reward head"):
        reward_function(rm, "liberty")


def test_repetition_reward_penalises_loops_not_answers():
    loop = "it seems like a reasonable request, it seems like a reasonable request, it seems like a reasonable request"
    answer = "I would talk to her first and explain why the rent went up before deciding anything."
    assert repeated_ngram_share(answer) == 0.0 and repeated_ngram_share("") == 0.0
    assert repeated_ngram_share(loop) == pytest.approx(8 / 15)  # 15 word 4-grams, 7 distinct
    got = repetition_reward(completions=[answer, [{"role": "assistant", "content": loop}]])
    assert got == pytest.approx([0.0, -8 / 15])
    assert looping_share([answer, loop, "short"]) == pytest.approx(1 / 3)


def test_binary_metrics():
    m = binary_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6])
    assert m["accuracy"] == 0.5 and m["f1"] == 0.5 and m["balanced_accuracy"] == 0.5


def test_labels_make_other_foundations_negatives():
    rows = [
        {"action": "helping a stranger", "label": 1, "foundations": ["care"]},
        {"action": "cheating at cards", "label": 0, "foundations": ["fairness", "loyalty"]},
        {"action": "speaking freely", "label": 1, "foundations": ["liberty"]},  # not a run value: left out
    ]
    texts, y, m = socialchem_targets(rows, ["care", "fairness", "loyalty"])
    assert texts == ["helping a stranger", "cheating at cards"]
    assert y.tolist() == [[1, 0, 0], [0, 0, 0]] and m.tolist() == [[1, 1, 1], [1, 1, 1]]
    _, _, m_only = socialchem_targets(rows, ["care", "fairness", "loyalty"], other_negatives=False)
    assert m_only.tolist() == [[1, 0, 0], [0, 1, 1]]  # the paper's per-value rows only
    mic = [{"answer": "No, keep your word.", "a_agrees": 2, "worker_answer": "", "moral": ["loyalty"]}]
    t, y2, _ = mic_reply_targets(mic + [{**mic[0], "a_agrees": 1}], ["care", "loyalty"])
    assert t == ["No, keep your word."] and y2.tolist() == [[0, 1]]  # the neutral reply is left out


def test_balanced_weights_give_each_class_half():
    y = np.array([[1.0], [0.0], [0.0], [0.0]], dtype=np.float32)
    w = balanced_weights(y, np.ones_like(y))
    assert w[0, 0] == pytest.approx(w[1:, 0].sum())


def test_looping_table_with_or_without_its_heading():
    from cmva.evaluate import looping_lines

    loops = {"cmva-gs": 0.25, "agent:care": 0.5}
    full, table = looping_lines(loops), looping_lines(loops, heading=False)
    assert full[0] == "## Answers that loop" and full[2:] == table
    assert "| agent:care | 50% |" in table and not any(line.startswith("#") for line in table)
    assert looping_lines({}) == [] == looping_lines(None, heading=False)
