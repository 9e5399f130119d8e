"""Shared pieces of the data loaders: errors that name file/row/column, load reports, cell parsers."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cmva.values import canonical_name


class DataError(ValueError):
    """A data file does not follow its schema.

    Attributes:
        path: The file.
        row: 1-based data row (the header is row 0), or None for file-level problems.
        column: The offending column, or None.
    """

    def __init__(self, path: str | Path, message: str, row: int | None = None, column: str | None = None):
        self.path, self.row, self.column = str(path), row, column
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


@dataclass
class LoadReport:
    """What a loader read, kept and skipped (skips are never silent)."""

    path: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        s = f"{self.path}: {self.rows_kept}/{self.rows_read} rows kept"
        if self.skipped:
            s += " (skipped: " + ", ".join(f"{n} {why}" for why, n in self.skipped.items()) + ")"
        return s


def read_rows(path: str | Path, delimiter: str, required: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (1-based row number, row) after checking the header has every required column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(
                path,
                f"missing required column(s) {', '.join(missing)}; the file has: {', '.join(header) or 'no header'}",
                column=missing[0],
            )
        for i, row in enumerate(reader, start=1):
            if None in row:  # more cells than header fields: a broken quote or delimiter
                raise DataError(path, f"row has {len(header) + len(row[None])} cells, header has {len(header)}", row=i)
            yield i, {k: (v or "").strip() for k, v in row.items()}


def is_missing(cell: str) -> bool:
    """Empty, or a pandas-written missing value."""
    return cell == "" or cell.lower() in ("nan", "none", "null")


def parse_number(path, row: int, column: str, cell: str, lo: float, hi: float, integer: bool = False) -> float:
    """Parse a numeric cell within [lo, hi]; '2.0' is accepted as an integer 2."""
    try:
        x = float(cell)
    except ValueError:
        raise DataError(path, f"expected a number in [{lo:g}, {hi:g}], got {cell!r}", row, column) from None
    if math.isnan(x) or not lo <= x <= hi:
        raise DataError(path, f"expected a number in [{lo:g}, {hi:g}], got {cell!r}", row, column)
    if integer and x != int(x):
        raise DataError(path, f"expected a whole number, got {cell!r}", row, column)
    return x


def parse_foundations(path, row: int, column: str, cell: str) -> list[str]:
    """Parse a `|`-separated foundation list into canonical value names (order kept, no repeats)."""
    out: list[str] = []
    for label in cell.split("|"):
        if not label.strip():
            continue
        try:
            name = canonical_name(label)
        except KeyError:
            raise DataError(path, f"unknown moral foundation {label.strip()!r}", row, column) from None
        if name not in out:
            out.append(name)
    return out
