"""bench/agent_dev: candidate agents are judged beside the run's agents on the MIC dev questions, by their own value."""

from __future__ import annotations

import json

import pytest

from bench.agent_dev import candidate_sets, dev_compare, main
from cmva.data import SAMPLE_MIC, load_mic
from cmva.values import resolve_values


class _Judge:
    """care: 0.9 for an answer saying "kind", else 0.1; loyalty: 0.8 for "loyal", else 0.2."""

    def score(self, texts):
        return {
            "care": [0.9 if "kind" in t else 0.1 for t in texts],
            "loyalty": [0.8 if "loyal" in t else 0.2 for t in texts],
        }


def _adapter(d):
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text("{}")
    return d


def _run(tmp_path):
    run = tmp_path / "run"
    for d in ("import-base/base", "train-rewards/rewards", "evaluate/report"):
        (run / d).mkdir(parents=True)
    for v in ("care", "loyalty"):
        _adapter(run / "collect-agents" / "agents" / v)
    config = {"max_new_tokens": 8, "batch_size": 4}
    (run / "evaluate/report/report.json").write_text(json.dumps({"data": str(SAMPLE_MIC), "config": config}))
    return run


def test_candidates_are_judged_on_dev_by_their_own_value(tmp_path, monkeypatch):
    from cmva import rewards

    run = _run(tmp_path)
    _adapter(tmp_path / "const_care")  # no loyalty adapter: that value is skipped for the candidate
    monkeypatch.setattr(rewards.RewardModel, "load", staticmethod(lambda path: _Judge()))
    asked = {}

    def answer(paths, report, sets, questions):
        asked.update(sets={n: sorted(s) for n, s in sets.items()}, n=len(questions))
        loop = "stay loyal to them, stay loyal to them, stay loyal to them"
        text = {("run", "care"): "meh", ("run", "loyalty"): loop, ("const", "care"): "kind"}
        return {n: {v: [text[n, v]] * len(questions) for v in s} for n, s in sets.items()}

    md = main(["--run", str(run), "--candidate", f"const={tmp_path}/const_{{value}}", "--out", str(tmp_path)], answer)
    dev = {r["question"] for r in load_mic(SAMPLE_MIC, resolve_values(), split="dev")[0]}
    assert asked == {"sets": {"run": ["care", "loyalty"], "const": ["care"]}, "n": len(dev)}
    result = json.loads(md.with_suffix(".json").read_text())
    care = result["values"]["care"]
    assert care["run"]["mean"] == pytest.approx(0.1) and care["const"]["delta"] == pytest.approx(0.8)
    assert "const" not in result["values"]["loyalty"] and result["values"]["loyalty"]["run"]["mean"] == pytest.approx(
        0.8
    )
    assert result["mean_delta"] == {"const": pytest.approx(0.8)}
    assert "| care | 0.100 | 0.900 | +0.800 |" in md.read_text()
    assert result["looping"] == {"run": {"care": 0.0, "loyalty": 1.0}, "const": {"care": 0.0}}  # own 4-gram repeated
    assert "| loyalty | 100% | – |" in md.read_text()


def test_dev_compare_pairs_questions_and_averages_over_values():
    r = dev_compare(
        {"run": {"care": [0.2, 0.4], "loyalty": [0.5, 0.5]}, "c": {"care": [0.5, 0.5], "loyalty": [0.4, 0.4]}}
    )
    assert r["values"]["care"]["c"]["delta"] == pytest.approx(0.2)
    assert r["values"]["care"]["c"]["delta_ci95"] == pytest.approx([0.1, 0.3])
    assert r["mean_delta"]["c"] == pytest.approx(0.05)


def test_a_bad_candidate_is_named(tmp_path):
    with pytest.raises(SystemExit, match="NAME=PATH with {value}"):
        candidate_sets(["const=/tmp/x"], ["care"])
    with pytest.raises(SystemExit, match="no adapter at"):
        candidate_sets([f"c={tmp_path}/{{value}}"], ["care"])
