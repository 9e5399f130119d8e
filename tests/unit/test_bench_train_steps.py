"""bench/train_steps: TRL's own CPU scoring and cmva's labelled-only scoring, alternating, train alike."""

from __future__ import annotations

import json

import pytest

trl_utils = pytest.importorskip("trl.trainer.utils")


def test_both_ways_train_alike_and_trl_is_left_as_found(smoke_run, tmp_path):
    from bench.train_steps import main

    run, _, _ = smoke_run
    before = trl_utils._use_triton
    md = main(["--run", str(run), "--profile", "smoke", "--sft-steps", "2", "--rl-steps", "2", "--out", str(tmp_path)])
    assert trl_utils._use_triton is before
    r = json.loads(md.with_suffix(".json").read_text())
    got = {(t["trainer"], t["way"]): t for t in r["trials"]}
    assert sorted(got) == [("rloo", "labelled-only"), ("rloo", "trl-own"), ("sft", "labelled-only"), ("sft", "trl-own")]
    for kind in ("sft", "rloo"):
        own, labelled = got[(kind, "trl-own")], got[(kind, "labelled-only")]
        assert own["steps"] == labelled["steps"] == 2
        flat = lambda t: [float(x) for step in t["per_step"] for x in (step if isinstance(step, list) else [step])]  # noqa: E731
        assert flat(own) == pytest.approx(flat(labelled), rel=1e-3, abs=1e-4)
    assert set(r["mean_s_per_step"]) == {"sft/trl-own", "sft/labelled-only", "rloo/trl-own", "rloo/labelled-only"}
    assert "| sft | trl-own | 0 |" in md.read_text()
