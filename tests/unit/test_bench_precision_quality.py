"""bench/precision_quality: a compared report whose CMVA-GS ROUGE-L leaves the reference's CI does not hold."""

from __future__ import annotations

import json

from bench.precision_quality import main


def _report(d, rouge_l, dtype, texts):
    d.mkdir()
    report = {
        "rouge": {"cmva-gs": {"rougeL": rouge_l}},
        "rouge_ci95": {"cmva-gs": {"rougeL": [rouge_l - 0.01, rouge_l + 0.01]}},
        "conformity": {"care": {"delta": 0.1}},
        "sensitivity": {"cmva-gs": {"mean_spearman": 0.3}},
        "paired": {"cmva-gs": {"win_rate": 0.7, "ci95": [0.6, 0.8]}},
        "selector_agreement": {"paired": 0.7, "graded": 0.8},
        "phases_s": {"agents": 1.0},
        "config": {"dtype": dtype},
    }
    (d / "report.json").write_text(json.dumps(report))
    (d / "generations.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return d


def test_verdicts_and_identical_generations(tmp_path):
    ref = _report(tmp_path / "ref", 0.135, None, ["a", "b", "c"])
    close = _report(tmp_path / "bf16", 0.140, "bfloat16", ["a", "x", "c"])
    far = _report(tmp_path / "int8", 0.090, "int8", ["y", "x", "z"])
    main(["--ref", str(ref), "--compare", f"bf16={close}", f"int8={far}", "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "precision_quality.md").read_text()
    assert "| bf16 | 0.140 in [0.125, 0.145]: holds |" in md
    assert "| int8 | 0.090 in [0.125, 0.145]: DOES NOT HOLD |" in md
    result = json.loads((tmp_path / "out" / "precision_quality.json").read_text())
    assert result["reports"]["bf16"]["identical_generations"] == [2, 3]
    assert result["reports"]["int8"]["identical_generations"] == [0, 3]
    assert result["reports"]["reference"]["precision"] == "float32"
