"""Data loaders: schema errors name file/row/column; profile and target rules of cmva/data/mic.py."""

from __future__ import annotations

import csv

import pytest

from cmva.data import DataError, load_mic, load_socialchem
from cmva.data.mic import profile_of, target_of
from cmva.values import resolve_values

MIC_COLS = ["Q", "A", "rot", "moral", "A_agrees", "rot-agree", "violation-severity", "worker_answer", "split"]
GOOD_MIC = {
    "Q": "Should I tell my friend her haircut looks bad?",
    "A": "Be kind about it; tell her gently only if she asks.",
    "rot": "It is good to be kind.",
    "moral": "care",
    "A_agrees": "2",
    "rot-agree": "5",
    "violation-severity": "2",
    "worker_answer": "",
    "split": "train",
}


def write_mic(path, rows, cols=MIC_COLS):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def write_sc(path, rows, cols=("action", "action-moral-judgment", "rot-moral-foundations", "split")):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(cols), delimiter="\t", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def test_profile_and_target_rules(tmp_path):
    rows = [
        dict(GOOD_MIC),
        dict(GOOD_MIC, moral="fairness|loyalty", A_agrees="0", worker_answer="Tell her kindly."),
        dict(GOOD_MIC, moral="Sanctity|liberty", A_agrees="1"),
        dict(GOOD_MIC, moral="authority", A_agrees="2.0", worker_answer="Revised answer."),
    ]
    ds, report = load_mic(write_mic(tmp_path / "m.csv", rows))
    assert ds["profile"] == [
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],  # liberty is not a default value: not in the profile
        [0.0, 0.0, 0.0, 1.0, 0.0],
    ]
    # worker_answer wins; else A when A_agrees == 2; else no target.
    assert ds["target"] == [GOOD_MIC["A"], "Tell her kindly.", "", "Revised answer."]
    assert report.rows_read == 4 and report.rows_kept == 4
    assert sum(report.skipped.values()) == 1  # the neutral row has no target, and is reported
    six = resolve_values(["care", "fairness", "loyalty", "authority", "sanctity", "liberty"])
    assert profile_of(["liberty"], six) == [0, 0, 0, 0, 0, 1.0]
    assert target_of("a", 1, "") == ""


def test_split_filter_and_no_split_column(tmp_path):
    rows = [dict(GOOD_MIC, split=s) for s in ("train", "test", "dev", "test")]
    ds, _ = load_mic(write_mic(tmp_path / "m.csv", rows), split="test")
    assert len(ds) == 2
    cols = [c for c in MIC_COLS if c != "split"]
    ds, _ = load_mic(write_mic(tmp_path / "n.csv", rows, cols), split="test")
    assert len(ds) == 4 and set(ds["split"]) == {"all"}


@pytest.mark.parametrize(
    "change, row, column, message",
    [
        ({"Q": ""}, 2, "Q", "empty question"),
        ({"A": "  "}, 2, "A", "empty reply"),
        ({"moral": "care|honour"}, 2, "moral", "unknown moral foundation 'honour'"),
        ({"A_agrees": "yes"}, 2, "A_agrees", "expected a number"),
        ({"A_agrees": "3"}, 2, "A_agrees", "expected a number in [0, 2]"),
        ({"rot-agree": "9"}, 2, "rot-agree", "[1, 5]"),
        ({"split": "holdout"}, 2, "split", "unknown split"),
    ],
)
def test_mic_errors_name_file_row_column(tmp_path, change, row, column, message):
    path = write_mic(tmp_path / "bad.csv", [GOOD_MIC, dict(GOOD_MIC, **change)])
    with pytest.raises(DataError) as e:
        load_mic(path)
    assert (e.value.row, e.value.column) == (row, column)
    assert message in str(e.value) and "bad.csv" in str(e.value)


def test_mic_missing_column(tmp_path):
    path = write_mic(tmp_path / "m.csv", [GOOD_MIC], [c for c in MIC_COLS if c != "A_agrees"])
    with pytest.raises(DataError, match="missing required column.*A_agrees") as e:
        load_mic(path)
    assert e.value.column == "A_agrees" and e.value.row is None


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_mic(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no data rows"):
        load_mic(write_mic(tmp_path / "e.csv", []))


GOOD_SC = {
    "action": "lying to your boss",
    "action-moral-judgment": "-1",
    "rot-moral-foundations": "fairness-cheating",
    "split": "train",
}


def test_socialchem_labels_and_skips(tmp_path):
    rows = [
        GOOD_SC,
        dict(GOOD_SC, **{"action-moral-judgment": "0", "rot-moral-foundations": "care-harm|loyalty-betrayal"}),
        dict(GOOD_SC, **{"action-moral-judgment": "2.0"}),
        dict(GOOD_SC, **{"action-moral-judgment": ""}),  # real file: unannotated rows
        dict(GOOD_SC, **{"rot-moral-foundations": ""}),
    ]
    ds, report = load_socialchem(write_sc(tmp_path / "s.tsv", rows))
    assert ds["label"] == [0, 1, 1]
    assert ds["foundations"][1] == ["care", "loyalty"]
    assert report.rows_read == 5 and report.rows_kept == 3
    assert report.skipped == {"rows without a moral judgment": 1, "rows without a moral foundation": 1}
    assert "3/5 rows kept" in report.summary()


@pytest.mark.parametrize(
    "change, column, message",
    [
        ({"action": ""}, "action", "empty action"),
        ({"action-moral-judgment": "bad"}, "action-moral-judgment", "expected a number"),
        ({"action-moral-judgment": "3"}, "action-moral-judgment", "[-2, 2]"),
        ({"rot-moral-foundations": "care-harm|greed"}, "rot-moral-foundations", "unknown moral foundation"),
    ],
)
def test_socialchem_errors(tmp_path, change, column, message):
    path = write_sc(tmp_path / "bad.tsv", [GOOD_SC, GOOD_SC, dict(GOOD_SC, **change)])
    with pytest.raises(DataError) as e:
        load_socialchem(path)
    assert (e.value.row, e.value.column) == (3, column)
    assert message in str(e.value) and "bad.tsv" in str(e.value)


def test_socialchem_missing_column(tmp_path):
    path = write_sc(tmp_path / "s.tsv", [GOOD_SC], ("action", "action-moral-judgment"))
    with pytest.raises(DataError, match="rot-moral-foundations"):
        load_socialchem(path)


def test_values_registry():
    assert [v.name for v in resolve_values()] == ["care", "fairness", "loyalty", "authority", "sanctity"]
    assert resolve_values(["liberty"])[0].socialchem_label == "liberty-oppression"
    with pytest.raises(ValueError, match="unknown moral value 'honour'"):
        resolve_values(["care", "honour"])
    with pytest.raises(ValueError, match="twice"):
        resolve_values(["care", "care-harm"])
