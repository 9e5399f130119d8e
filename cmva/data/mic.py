"""Loader for the Moral Integrity Corpus (Ziems et al. 2022), real `MIC.csv` or any file in its schema.

Rules:
- profile c of a row: 1.0 for each configured value listed in `moral`, else 0.0 (MIC's moral-vector);
- aggregator target: `worker_answer` when present and non-empty, else `A` when `A_agrees == 2`;
  other rows have an empty target (kept for evaluation of the inputs, never trained on).

Example:
    >>> ds, report = load_mic(SAMPLE_MIC)               # doctest: +SKIP
    >>> ds[0]["profile"], ds[0]["target"]               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from cmva.data.schema import DataError, LoadReport, is_missing, parse_foundations, parse_number, read_rows
from cmva.values import MoralValue, resolve_values

REQUIRED = ["Q", "A", "rot", "moral", "A_agrees"]
SPLITS = ("train", "dev", "test")


def target_of(answer: str, a_agrees: int, worker_answer: str) -> str:
    """The aggregator's ground-truth answer for a MIC row ('' when the row is not a target)."""
    if worker_answer:
        return worker_answer
    return answer if a_agrees == 2 else ""


def profile_of(moral: list[str], values: list[MoralValue]) -> list[float]:
    """MIC's moral-vector restricted to the configured values."""
    return [1.0 if v.name in moral else 0.0 for v in values]


def load_mic(path: str | Path, values: list[MoralValue] | None = None, split: str | None = None):
    """Read a MIC-schema CSV into a `datasets.Dataset`.

    Args:
        path: The CSV file.
        values: Configured moral values (profile order); the default five when None.
        split: Keep only rows of this split ("train", "dev", "test"). Files without a `split`
            column have every row in every split (an external test file is all test).

    Returns:
        (dataset, report). Columns: id, question, answer, rot, moral, profile, a_agrees, rot_agree,
        violation_severity, worker_answer, target, split.

    Raises:
        DataError: Missing column, empty question or answer, unknown foundation, wrong type — naming
            file, row and column.
    """
    from datasets import Dataset

    values = values or resolve_values()
    path = Path(path)
    report = LoadReport(str(path))
    rows = []
    for i, r in read_rows(path, ",", REQUIRED):
        report.rows_read += 1
        if is_missing(r["Q"]):
            raise DataError(path, "empty question", i, "Q")
        if is_missing(r["A"]):
            raise DataError(path, "empty reply", i, "A")
        if is_missing(r["A_agrees"]):
            raise DataError(path, "missing value (expected 0, 1 or 2)", i, "A_agrees")
        a_agrees = int(parse_number(path, i, "A_agrees", r["A_agrees"], 0, 2, integer=True))
        moral = parse_foundations(path, i, "moral", r["moral"])
        extra = {}
        for col in ("rot-agree", "violation-severity"):
            cell = r.get(col, "")
            extra[col] = None if is_missing(cell) else int(parse_number(path, i, col, cell, 1, 5, integer=True))
        row_split = r.get("split", "")
        if row_split and row_split not in SPLITS:
            raise DataError(path, f"unknown split {row_split!r}; expected one of {', '.join(SPLITS)}", i, "split")
        if split and row_split and row_split != split:
            continue
        worker = "" if is_missing(r.get("worker_answer", "")) else r["worker_answer"]
        target = target_of(r["A"], a_agrees, worker)
        if not target:
            report.skip("rows without a target answer (kept, not trained on)")
        rows.append(
            {
                "id": r.get("rot_id") or f"{path.stem}:{i}",
                "question": r["Q"],
                "answer": r["A"],
                "rot": r["rot"],
                "moral": moral,
                "profile": profile_of(moral, values),
                "a_agrees": a_agrees,
                "rot_agree": extra["rot-agree"],
                "violation_severity": extra["violation-severity"],
                "worker_answer": worker,
                "target": target,
                "split": row_split or "all",
            }
        )
    if report.rows_read == 0:
        raise DataError(path, "no data rows")
    report.rows_kept = len(rows)
    return Dataset.from_list(rows), report
