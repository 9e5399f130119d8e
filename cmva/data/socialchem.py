"""Loader for Social-Chemistry-101 (Forbes et al. 2020), the real TSV or any file in its schema.

Label (the paper's binarization): 0 if `action-moral-judgment` < 0 else 1 (neutral/positive).
A value's classifier trains on the rows whose `rot-moral-foundations` include that value.

The real file has rows with no judgment or no foundation (annotations of other kinds): those are
skipped and counted in the report, never silently. Anything present but malformed is an error.
"""

from __future__ import annotations

from pathlib import Path

from cmva.data.mic import SPLITS
from cmva.data.schema import DataError, LoadReport, is_missing, parse_foundations, parse_number, read_rows

REQUIRED = ["action", "action-moral-judgment", "rot-moral-foundations"]


def label_of(judgment: float) -> int:
    """0 = the action goes against the value (judgment < 0), 1 = neutral or positive."""
    return 0 if judgment < 0 else 1


def load_socialchem(path: str | Path, split: str | None = None):
    """Read a Social-Chemistry-schema TSV into a `datasets.Dataset`.

    Args:
        path: The TSV file.
        split: Keep only rows of this split; files without a `split` column keep every row.

    Returns:
        (dataset, report). Columns: action, judgment, label, foundations, rot, split.

    Raises:
        DataError: Missing column, empty action, judgment outside −2…2 or not a number, unknown
            foundation — naming file, row and column.
    """
    from datasets import Dataset

    path = Path(path)
    report = LoadReport(str(path))
    rows = []
    for i, r in read_rows(path, "\t", REQUIRED):
        report.rows_read += 1
        if is_missing(r["action-moral-judgment"]):
            report.skip("rows without a moral judgment")
            continue
        if is_missing(r["rot-moral-foundations"]):
            report.skip("rows without a moral foundation")
            continue
        if is_missing(r["action"]):
            raise DataError(path, "empty action", i, "action")
        judgment = parse_number(path, i, "action-moral-judgment", r["action-moral-judgment"], -2, 2)
        foundations = parse_foundations(path, i, "rot-moral-foundations", r["rot-moral-foundations"])
        row_split = r.get("split", "")
        if row_split and row_split not in SPLITS:
            raise DataError(path, f"unknown split {row_split!r}; expected one of {', '.join(SPLITS)}", i, "split")
        if split and row_split and row_split != split:
            continue
        rows.append(
            {
                "action": r["action"],
                "judgment": judgment,
                "label": label_of(judgment),
                "foundations": foundations,
                "rot": r.get("rot", ""),
                "split": row_split or "all",
            }
        )
    if not rows:
        raise DataError(path, f"no usable rows ({report.summary()})")
    report.rows_kept = len(rows)
    return Dataset.from_list(rows), report
