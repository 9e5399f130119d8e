"""bench/linear_kernels: float32 and float16-weights timed on SmolLM2's shapes; the packed layer computes what the
float32 one does, to float16's rounding of the weights."""

from __future__ import annotations

import json

import torch

from bench.linear_kernels import main
from cmva.cpu_linear import Float16WeightLinear


def test_packed_layer_matches_float32_to_float16_rounding():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    packed = Float16WeightLinear.of(lin)
    x = torch.randn(5, 64)
    ref = lin(x)
    rounded = torch.nn.functional.linear(x, lin.weight.half().float(), lin.bias)
    with torch.inference_mode():
        got = packed(x)
    assert got.dtype == torch.float32 and not torch.equal(got, ref)
    assert torch.allclose(got, rounded, atol=1e-4)
    assert packed.weight.dtype == torch.float32 and torch.equal(packed.weight, lin.weight.half().float())


def test_bench_writes_both_timings_per_row_count(tmp_path):
    main(["--rows", "1,3", "--reps", "1", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "linear_kernels.json").read_text())
    assert [x["rows"] for x in r["rows"]] == [1, 3]
    assert all(x["float32_s"] > 0 and x["float16_weights_s"] > 0 for x in r["rows"])
    assert "| 3 |" in (tmp_path / "linear_kernels.md").read_text()
