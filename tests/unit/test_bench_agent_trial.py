"""bench/agent_trial: the retrained agent is judged on the run's own test questions, beside the run's agent."""

from __future__ import annotations

import json

import pytest

from bench.agent_trial import main
from cmva.data import SAMPLE_MIC, load_mic
from cmva.values import resolve_values


class _Judge:
    """Scores 0.9 on care for an answer saying "kind", else 0.1."""

    def score(self, texts):
        return {"care": [0.9 if "kind" in t else 0.1 for t in texts]}


def _run(tmp_path, ids):
    run = tmp_path / "run"
    for d in ("import-base/base", "train-rewards/rewards", "evaluate/report"):
        (run / d).mkdir(parents=True)
    texts = {"pt": "meh", "agent:care": ["kind", "meh", "meh"], "agent:loyalty": "meh", "cmva-gs": "x"}
    gens = [
        {"row_id": i, "system": s, "text": t if isinstance(t, str) else t[k]}
        for s, t in texts.items()
        for k, i in enumerate(ids)
    ]
    gens.append({"row_id": ids[0], "system": "pt", "probe": "paired", "text": "kind"})  # a probe: not a test answer
    report = run / "evaluate" / "report"
    (report / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    (report / "report.json").write_text(json.dumps({"data": str(SAMPLE_MIC), "config": {"max_new_tokens": 8}}))
    return run


def test_the_retrained_agent_is_compared_on_the_runs_test_answers(tmp_path, monkeypatch):
    from cmva import rewards

    ids = [r["id"] for r in load_mic(SAMPLE_MIC, resolve_values(), split="test")[0]][:3]
    run = _run(tmp_path, ids)
    monkeypatch.setattr(rewards.RewardModel, "load", staticmethod(lambda path: _Judge()))
    asked = {}

    def train(paths, report, value, profile, sets, out, questions):
        asked.update(value=value, profile=profile, sets=sets, n=len(questions))
        return {
            "answers": ["kind"] * len(questions),
            "summary": {"reward_first": 0.1, "reward_last": 0.5, "train_s": 1},
        }

    md = main(
        ["--run", str(run), "--value", "care", "--set", "agent.beta=0.2", "--out", str(tmp_path / "out")],
        train_answer=train,
    )
    assert asked == {"value": "care", "profile": "cpu", "sets": {"agent.beta": 0.2}, "n": 3}
    result = json.loads(md.with_suffix(".json").read_text())
    assert result["conformity"]["trial"]["delta"] == pytest.approx(0.8)
    assert result["conformity"]["run"]["delta"] == pytest.approx(0.8 / 3)
    assert result["specialisation"]["trial"] == {"loyalty": 1.0}
    assert "| retrained | 0.100 | 0.900 | +0.800 |" in md.read_text()


def test_a_directory_without_a_finished_run_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no finished run"):
        main(["--run", str(tmp_path), "--value", "care"])


def test_train_only_needs_base_and_rewards_and_trains_with_the_stages_settings(tmp_path, monkeypatch):
    from cmva import agents

    run = tmp_path / "run"
    for d in ("base", "rewards"):  # a run stopped after its reward stage: no evaluation report
        (run / d).mkdir(parents=True)
    seen = {}

    def train_agent(value, base, rewards, questions, out, cfg, dev_questions=None):
        seen.update(value=value, base=base, n=len(questions), temperature=cfg.temperature, seed=cfg.seed)
        return {"value": value}

    monkeypatch.setattr(agents, "train_agent", train_agent)
    args = ["--run", str(run), "--value", "care", "--set", "agent.per_value.care.temperature=1.2", "--train-only"]
    out = main([*args, "--work", str(tmp_path / "care")])
    assert out == tmp_path / "care" / "summary.json"
    assert seen == {"value": "care", "base": run / "base", "n": seen["n"], "temperature": 1.2, "seed": 0}
    assert seen["n"] == len({r["question"] for r in load_mic(SAMPLE_MIC, resolve_values(), split="train")[0]})
