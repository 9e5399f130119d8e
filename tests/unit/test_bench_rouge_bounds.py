"""bench/rouge_bounds reads an evaluation's answers and gives known numbers on hand-made ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.rouge_bounds import bounds, load
from cmva.data import SAMPLE_MIC, load_mic
from cmva.values import resolve_values

VALUES = ["care", "fairness"]


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """Four test questions: care's agent answers with MIC's own answer, fairness's with unrelated words; CMVA-GS
    copies care's answer where the profile asks for care, fairness's elsewhere; few-shot writes nothing useful."""
    rows = [r for r in load_mic(SAMPLE_MIC, resolve_values(VALUES))[0] if r["split"] == "test" and r["target"]][:4]
    profiles = [{"care": 1.0, "fairness": 0.0}] * 2 + [{"care": 0.0, "fairness": 1.0}] * 2
    lines = []
    for r, p in zip(rows, profiles, strict=True):
        answers = {"agent:care": r["target"], "agent:fairness": "zebra quartz violin", "few-shot": "plain text here"}
        answers["cmva-gs"] = answers["agent:care" if p["care"] else "agent:fairness"]
        answers["pt"] = answers["few-shot"]
        lines += [json.dumps({"row_id": r["id"], "system": s, "profile": p, "text": t}) for s, t in answers.items()]
        lines.append(json.dumps({"row_id": r["id"], "system": "cmva-gs", "profile": p, "text": "x", "probe": "paired"}))
    (tmp_path / "generations.jsonl").write_text("\n".join(lines))
    conformity = {v: {} for v in VALUES}
    (tmp_path / "report.json").write_text(json.dumps({"data": str(SAMPLE_MIC), "conformity": conformity}))
    return tmp_path


def test_selectors_and_copies_on_hand_made_answers(report: Path):
    values, answers, profiles, targets, ids = load(report)
    assert values == VALUES and len(ids) == 4 and answers["cmva-gs"][ids[0]] == targets[0]  # probes left out
    r = bounds(values, answers, profiles, targets, ids)
    t = r["table"]
    assert t["agent:care"]["rougeL"] == pytest.approx(1.0) and t["agent:fairness"]["rougeL"] == pytest.approx(0.0)
    assert t["oracle: the best agent per question"]["rougeL"] == pytest.approx(1.0)
    assert t["selector: the profile's heaviest value's agent"]["rougeL"] == pytest.approx(0.5)  # care twice of four
    assert t["cmva-gs"]["vs_few_shot"]["delta"] == pytest.approx(0.5 - t["few-shot"]["rougeL"])
    assert r["copies"] == {"the heaviest value's agent": 4}
