"""bench/decode_ops: the chain's generations split into time inside torch's ops (by op) and the rest, per dtype."""

from __future__ import annotations

from bench.decode_ops import main


def test_profile_sees_each_dtypes_own_kernels(smoke_run, tmp_path):
    out, _, _ = smoke_run
    args = ["--artifacts", str(out), "--dtypes", "float16-weights,float32", "--tokens", "3", "--reps", "1"]
    result = main([*args, "--out", str(tmp_path)])
    packed, plain = result["modes"]
    assert (packed["dtype"], plain["dtype"]) == ("float16-weights", "float32")
    for mode in (packed, plain):
        assert list(mode["steps"]) == ["base generation", "agents (5, one batch)", "aggregator"]
        for step in mode["steps"].values():
            assert step["wall_s"] > 0 and step["in_ops_s"] > 0 and step["outside_ops_s"] >= 0
        assert mode["disable_adapter_s"] > 0
    ops = lambda mode: set().union(*(s["ops"] for s in mode["steps"].values()))  # noqa: E731
    assert "quantized::linear_dynamic_fp16" in ops(packed)  # fbgemm's float16 GEMM: the packed base layers
    assert "quantized::linear_dynamic_fp16" not in ops(plain)
    assert "| float16-weights | agents (5, one batch) |" in (tmp_path / "decode_ops.md").read_text()
