"""The quality gate on hand-made evaluation reports: thresholds, NaN, missing parts, enforce: false."""

from __future__ import annotations

import math

import pytest

from cmva.config import GateCfg, load_profile
from cmva.gate import check_report


def _report(cmva=0.20, pt=0.10, few_shot=0.15, deltas=(0.1, 0.05)) -> dict:
    rouge = {"cmva-gs": cmva, "pt": pt, "few-shot": few_shot, "prompt-aggregation": 0.05, "weighted-merge": 0.12}
    return {
        "rouge": {s: {"rougeL": v, "rouge1": v + 0.05} for s, v in rouge.items()},
        "conformity": {
            v: {"pt": 0.7, "agent": 0.7 + d, "delta": d} for v, d in zip(["care", "fairness"], deltas, strict=True)
        },
    }


def test_passes_when_above_best_baseline_and_every_agent_above_pt():
    r = check_report(_report(), GateCfg())
    assert r.passed and r.all_ok and r.verdict == "pass"
    rouge = next(c for c in r.checks if c.name == "rougeL_vs_best_baseline")
    assert rouge.threshold == pytest.approx(0.15) and "few-shot" in rouge.detail
    m = r.metrics()
    assert m["gate_passed"] == 1.0 and m["rougeL_vs_best_baseline"] == pytest.approx(0.20)
    assert m["conformity_delta_care_threshold"] == 0.0
    assert "**PASSED**" in r.markdown()


@pytest.mark.parametrize(
    "report, failing",
    [
        (_report(cmva=0.14), "rougeL_vs_best_baseline"),  # below few-shot (the cpu recipe's situation)
        (_report(deltas=(0.1, -0.01)), "conformity_delta_fairness"),  # one agent below the PT model
        (_report(deltas=(0.1, 0.0)), "conformity_delta_fairness"),  # equal to PT is not above it
        (_report(cmva=float("nan")), "rougeL_vs_best_baseline"),  # NaN never passes
        (_report(few_shot=float("nan")), "rougeL_vs_best_baseline"),  # nor a NaN baseline
    ],
)
def test_fails_naming_the_check(report, failing):
    r = check_report(report, GateCfg())
    assert not r.passed and r.verdict == "fail"
    assert [c.name for c in r.checks if not c.ok] == [failing]
    assert "**FAILED**" in r.markdown() and f"| {failing} |" in r.markdown()
    assert all(math.isfinite(v) for v in r.metrics().values())  # KFP metrics cannot hold NaN


def test_margin_and_baseline_choice():
    assert not check_report(_report(), GateCfg(rougeL_margin=0.06)).passed  # 0.20 < 0.15 + 0.06
    assert check_report(_report(cmva=0.14), GateCfg(baselines=["pt", "weighted-merge"])).passed
    assert check_report(_report(deltas=(0.1, 0.05)), GateCfg(min_conformity_delta=0.04)).passed
    assert not check_report(_report(deltas=(0.1, 0.05)), GateCfg(min_conformity_delta=0.06)).passed


def test_missing_parts_fail():
    r = check_report({"rouge": {"cmva-gs": {"rougeL": 0.3}}, "conformity": {}}, GateCfg())
    assert not r.passed and r.problems and "missing:" in r.markdown()
    assert not check_report({}, GateCfg()).passed


def test_not_enforced_reports_but_lets_through():
    r = check_report(_report(cmva=0.01), GateCfg(enforce=False))
    assert r.passed and not r.all_ok and r.verdict == "pass"
    assert r.metrics()["gate_checks_ok"] == 0.0 and r.metrics()["gate_enforced"] == 0.0
    assert "not enforced" in r.markdown()


def test_recipes_gate_settings():
    """Smoke and cpu (small models, below few-shot at this size) report without blocking; paper enforces."""
    assert not load_profile("smoke").gate.enforce and not load_profile("cpu").gate.enforce
    assert load_profile("paper").gate.enforce
    assert load_profile("paper", {"gate.rougeL_margin": 0.01}).gate.rougeL_margin == 0.01
