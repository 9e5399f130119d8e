"""Quality gate: does an evaluation report clear the recipe's thresholds (`gate:` section, `cmva.config.GateCfg`)?

The pipeline publishes a run for serving only when the gate passes (a `dsl.If` on its verdict); the verdict and
every check are logged as KFP metrics and a Markdown table in the dashboard. With `enforce: false` (smoke and cpu
recipes: small models that are not meant to beat the baselines) the verdict is reported but does not block.

Example:
    >>> from cmva.config import GateCfg
    >>> report = {"rouge": {"cmva-gs": {"rougeL": 0.2}, "pt": {"rougeL": 0.1}},
    ...           "conformity": {"care": {"delta": 0.05}}}
    >>> check_report(report, GateCfg(baselines=["pt"])).passed
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cmva.config import GateCfg

CMVA = "cmva-gs"


@dataclass(frozen=True)
class Check:
    """One threshold: `value` must be `op` `threshold` (op: '>=' or '>')."""

    name: str
    value: float
    op: str
    threshold: float
    detail: str

    @property
    def ok(self) -> bool:
        if not (math.isfinite(self.value) and math.isfinite(self.threshold)):
            return False
        return self.value >= self.threshold if self.op == ">=" else self.value > self.threshold


@dataclass(frozen=True)
class GateResult:
    checks: list[Check]
    enforced: bool
    problems: list[str] = field(default_factory=list)  # what the report lacks (each fails the gate)

    @property
    def all_ok(self) -> bool:
        return not self.problems and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def passed(self) -> bool:
        """Whether the run may be published: every check holds, or the gate is not enforced."""
        return self.all_ok or not self.enforced

    @property
    def verdict(self) -> str:
        """'pass' or 'fail': what the pipeline's condition compares (KFP conditions on strings read best)."""
        return "pass" if self.passed else "fail"

    def metrics(self) -> dict[str, float]:
        """Flat finite metrics for the dashboard: the verdict, and each check's value and threshold."""
        out = {
            "gate_passed": float(self.passed),
            "gate_checks_ok": float(self.all_ok),
            "gate_enforced": float(self.enforced),
        }
        for c in self.checks:
            for key, v in ((c.name, c.value), (f"{c.name}_threshold", c.threshold)):
                if math.isfinite(v):
                    out[key] = float(v)
        return out

    def markdown(self) -> str:
        if self.all_ok:
            head = "**PASSED**: every check holds; the run is published."
        elif self.enforced:
            head = "**FAILED**: the run is not published (thresholds: the recipe's `gate:` section)."
        else:
            head = "**FAILED, not enforced** (`gate.enforce: false`): the run is published anyway."
        lines = ["# Quality gate", "", head, "", "| check | value | required | ok | detail |", "|---|---|---|---|---|"]
        for c in self.checks:
            lines.append(
                f"| {c.name} | {c.value:.4f} | {c.op} {c.threshold:.4f} | {'yes' if c.ok else 'NO'} | {c.detail} |"
            )
        lines += [f"- missing: {p}" for p in self.problems]
        return "\n".join(lines) + "\n"


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def check_report(report: dict, cfg: GateCfg) -> GateResult:
    """The gate's checks on an evaluation report (`report.json` of the evaluate stage)."""
    checks, problems = [], []
    rouge = report.get("rouge") or {}
    if CMVA not in rouge:
        problems.append(f"report has no ROUGE for {CMVA!r}")
    baselines = {b: _num(rouge[b].get("rougeL")) for b in cfg.baselines if b in rouge}
    absent = [b for b in cfg.baselines if b not in rouge]
    if absent:
        problems.append(f"report has no ROUGE for baseline(s) {absent}")
    if CMVA in rouge and baselines:
        ours = _num(rouge[CMVA].get("rougeL"))
        finite = {b: v for b, v in baselines.items() if math.isfinite(v)}
        best = max(finite, key=finite.get) if len(finite) == len(baselines) else None
        threshold = finite[best] + cfg.rougeL_margin if best else float("nan")
        what = f"best baseline: {best}" if best else "a baseline's ROUGE-L is NaN"
        checks.append(Check("rougeL_vs_best_baseline", ours, ">=", threshold, f"{what}, margin {cfg.rougeL_margin:+g}"))
    conformity = report.get("conformity") or {}
    if not conformity:
        problems.append("report has no agent conformity")
    for value, c in conformity.items():
        checks.append(
            Check(
                f"conformity_delta_{value}", _num(c.get("delta")), ">", cfg.min_conformity_delta, f"{value} agent vs PT"
            )
        )
    return GateResult(checks, cfg.enforce, problems)
