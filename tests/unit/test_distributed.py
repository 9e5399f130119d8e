"""Data-parallel training (cmva.distributed): the recipe's global batch split over the ranks, and the smoke agent and
aggregator stages trained in 2 processes (torchrun, gloo) against 1 process at the same global batch and seed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.distributed import prepare, train, weight_gap  # noqa: E402
from cmva import distributed  # noqa: E402
from cmva.agents import rloo_config  # noqa: E402
from cmva.aggregator import sft_config  # noqa: E402
from cmva.config import load_profile  # noqa: E402
from cmva.models import load_dtype  # noqa: E402

# 2 processes see the same rows per optimisation step as 1 (each rank its half): SFT has no sampling, and RL samples
# each completion with noise keyed by its global row (cmva.sampling), so both runs train on the same completions.
# transformers normalises the SFT loss by the answer tokens of the whole global batch, RLOO takes the per-sequence
# mean of globally normalised advantages, so the weights differ only by float32 rounding (summation order, padding to
# another length, the all-reduce): measured ‖ΔB‖/‖B‖ = 3.5e-6 (SFT, 6 steps) and 2e-5 (RL, 6 steps). Adam moves each
# weight by about ±lr whatever the gradient's size, so rounding could flip a near-zero gradient's sign: the bound
# leaves room for that, and a wrong global batch or shard (rows read twice, the batch not split) or per-rank sampling
# (TRL's own: each rank its RNG stream) moves the update by far more (measured ‖ΔB‖/‖B‖ ≈ 1.5 for RL before).
REL_TOL = 1e-3


def test_per_device_batch_splits_the_global_batch():
    assert distributed.per_device_batch(256, grad_accum=8, world=4) == 8
    assert distributed.per_device_batch(4, world=2) == 2
    assert distributed.per_device_batch(4, world=1) == 4


@pytest.mark.parametrize(("batch", "accum", "world"), [(4, 1, 3), (256, 16, 32), (0, 1, 1), (8, 0, 1)])
def test_per_device_batch_names_the_field(batch, accum, world):
    with pytest.raises(ValueError, match="aggregator.per_device_train_batch_size: the global batch"):
        distributed.per_device_batch(batch, accum, "aggregator.per_device_train_batch_size", world)


def _who() -> tuple:
    return distributed.world_size(), distributed.rank(), distributed.is_main(), distributed.launched()


def test_rank_and_world_from_the_launcher(monkeypatch):
    for var in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert _who() == (1, 0, True, False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _who() == (2, 1, False, True)


def test_call_runs_here_for_one_process_or_inside_a_launch(monkeypatch):
    seen = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.call(1, seen.append, "here")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a rank of a launch: never launches again
    distributed.call(2, seen.append, "rank")
    assert seen == ["here", "rank"]
    with pytest.raises(ValueError, match="nproc"):
        distributed.call(0, seen.append, "never")
    cmd = distributed.torchrun_command(2, Path("call.pkl"))
    assert "--nproc_per_node=2" in cmd and cmd[-3:] == ["-m", "cmva.distributed", "call.pkl"]


def test_trainer_configs_take_their_share_of_the_recipe_batch(tmp_path):
    p = load_profile("smoke")
    assert (
        rloo_config(p.agent, tmp_path, world=2).per_device_train_batch_size == p.agent.per_device_train_batch_size // 2
    )
    assert sft_config(p.aggregator, tmp_path, world=2).per_device_train_batch_size == 2
    with pytest.raises(ValueError, match="agent.per_device_train_batch_size"):
        rloo_config(p.agent, tmp_path, world=3)
    paper = load_profile("paper")  # RL batch 256 = 32 × 8 accumulation steps; 8 GPUs: 4 each
    assert rloo_config(paper.agent, tmp_path, world=8).per_device_train_batch_size == 4
    assert paper.agent.num_iterations == 4 and paper.aggregator.lora.r == 128


def test_dtype_is_float32_on_cpu_and_as_asked_on_gpu():
    assert load_dtype("bfloat16", cuda=False) == load_dtype("auto", cuda=False) == "float32"
    assert load_dtype("bfloat16", cuda=True) == "bfloat16" and load_dtype("float32", cuda=True) == "float32"
    assert load_profile("smoke").base.dtype == load_profile("cpu").base.dtype == "float32"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_base):
    """Both smoke stages trained in 1 process (here) and in 2 (torchrun): {(stage, nproc): (out dir, summary)}."""
    work = tmp_path_factory.mktemp("ddp")
    profile = load_profile("smoke")
    inputs = prepare(work, profile, base=tiny_base)
    out = {}
    for stage in ("agent", "aggregator"):
        for n in (1, 2):
            d = work / f"{stage}-{n}"
            out[stage, n] = d, train(stage, d, inputs, profile, n)
    return out


@pytest.mark.parametrize("stage", ["agent", "aggregator"])
def test_two_processes_keep_the_global_batch_and_train(runs, stage):
    (one, s1), (two, s2) = runs[stage, 1], runs[stage, 2]
    assert (s1["processes"], s2["processes"]) == (1, 2)
    assert s2["global_batch"] == s1["global_batch"] and s2["per_device_batch"] * 2 == s1["per_device_batch"]
    assert s2["steps"] == s1["steps"] > 0
    gap = weight_gap(one, two)
    assert gap["ref_norm"] > 0 and gap["other_norm"] > 0  # lora_B starts at zero: both runs learned something
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # no trainer/ left over


@pytest.mark.parametrize("stage", ["agent", "aggregator"])
def test_weights_agree_across_process_counts(runs, stage):
    gap = weight_gap(runs[stage, 1][0], runs[stage, 2][0])
    assert gap["rel_update"] < REL_TOL, gap
    if stage == "agent":  # the same completions, so the same rewards
        assert runs[stage, 2][1]["reward_last"] == pytest.approx(runs[stage, 1][1]["reward_last"], abs=1e-4)


@pytest.mark.parametrize("command", ["train-agent", "train-aggregator"])
def test_stage_commands_take_nproc(command):
    from typer.testing import CliRunner

    from cmva.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0 and "--nproc" in result.output
