"""bench/run_summary reads stage timings and /usr/bin/time's figures from a `make run` log."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json  # noqa: E402

from bench.run_summary import _agreement_from, stage_times, time_v  # noqa: E402

LOG = """\x1b[0m23:40:01.500 - INFO - Executing task \x1b[96m'import-base'\x1b[0m
23:40:31.500 - INFO - Task \x1b[96m'import-base'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
23:40:31.600 - INFO - Executing task 'train-agent'
23:45:31.600 - INFO - Task 'train-agent' finished with status SUCCESS
23:45:32.000 - INFO - Executing task 'train-agent'
23:50:02.000 - INFO - Task 'train-agent' finished with status SUCCESS
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03
\tMaximum resident set size (kbytes): 5242880
"""


def test_stage_times_sum_loop_iterations():
    assert stage_times(LOG) == {"import-base": 30.0, "train-agent": 300.0 + 270.0}


def test_time_v_wall_and_rss():
    assert time_v(LOG) == {"wall_s": 3723.0, "peak_rss_mb": 5120.0}


def test_selector_agreement_recounted_from_an_older_reports_generations(tmp_path):
    gens = [
        *({"system": s, "probe": "paired", "text": t} for s, t in [("cmva-gs", "a b"), ("cmva-gs", "c d")]),
        *({"system": s, "probe": "sensitivity", "text": t} for s, t in [("cmva-gs", "x"), ("cmva-gs", "y")]),
        *({"system": "target-rule selector", "probe": "paired", "text": t} for t in ("a b", "c e")),
        *({"system": "target-rule selector", "probe": "sensitivity", "text": t} for t in ("x", "y")),
        {"system": "pt", "text": "unrelated"},
    ]
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in gens))
    assert _agreement_from(path) == {"paired": 0.5, "graded": 1.0}
    assert _agreement_from(tmp_path / "absent.jsonl") is None
