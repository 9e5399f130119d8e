"""bench/vllm_serving's pieces that run without a GPU: the `vllm serve` command line and the report."""

from __future__ import annotations

import json

import pytest

from bench.vllm_serving import lora_rank, render, vllm_argv


def _adapter(tmp_path, name: str, r: int):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": r}))
    return d


@pytest.mark.parametrize(("ranks", "want"), [([16, 16], 16), ([16, 100], 128), ([4], 8), ([512], 512)])
def test_lora_rank_is_the_smallest_vllm_accepts(tmp_path, ranks, want):
    adapters = {f"a{i}": _adapter(tmp_path, f"a{i}", r) for i, r in enumerate(ranks)}
    assert lora_rank(adapters) == want


def test_vllm_argv_serves_every_adapter_by_name(tmp_path):
    adapters = {"care": _adapter(tmp_path, "care", 16), "aggregator": _adapter(tmp_path, "aggregator", 128)}
    argv = vllm_argv(tmp_path, adapters, 8123, 0.3)
    at = argv.index("--lora-modules")
    assert argv[at + 1 :] == [f"care={tmp_path / 'care'}", f"aggregator={tmp_path / 'aggregator'}"]
    assert argv[argv.index("--max-loras") + 1] == "2" and argv[argv.index("--max-lora-rank") + 1] == "128"
    assert argv[argv.index("serve") + 1] == str(tmp_path / "base") and argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.3" and "--kv-cache-memory" not in argv
    sized = vllm_argv(tmp_path, adapters, 8123, 0.3, kv_gib=0.5)
    assert sized[sized.index("--kv-cache-memory") + 1] == str(2**29) and "--gpu-memory-utilization" not in sized


def _result(greedy):
    chain = {"latency_s": 0.25, "ttft_s": 0.14, "throughput_1_rps": 4.0, "throughput_8_rps": 14.0}
    chain |= {"gpu_bytes": 3 * 2**30, "peak_rss_bytes": 2**30}
    base = {"latency_s": 0.1, "prefill_s": 0.02, "decode_tokens_per_s": 400.0, "model_bytes": 2**28}
    ratios = {"latency_ratio": 2.5, "ttft_ratio": 1.4, "throughput_ratio": 3.5, "decode_bandwidth_fraction": 0.03}
    base["read_bandwidth_bytes_per_s"] = 4e12
    return {"vllm": "0.26.0", "artifacts": "a", "tokens": 32, "start_s": 80, "base": base, "chain": chain,
            "ratios": ratios, "greedy": greedy}  # fmt: skip


def test_render_gives_verdicts_and_the_greedy_comparison():
    md = render(_result({"base": {"equal": 2, "of": 3}}))
    assert "| (a) chain ÷ base ≤ 2.0 | 2.50 | MISSED" in md and "| (c) 8 ÷ 1 clients ≥ 3 | 3.50 | met" in md
    assert "- base: 2 of 3 equal" in md and "GPU 3.00 GiB" in md and "host RSS 1024 MiB" in md
    assert "Greedy comparison failed: boom" in render(_result({"error": "boom"}))


def test_transformer_overhead_stand_in_answers_as_vllm_does():
    """Its completion reads as a chat completion, the answer (stripped as the transformer strips vLLM's) intact."""
    from bench.transformer_overhead import ANSWER, completion
    from cmva.serving.chat_calls import completion_of

    got = completion_of(completion("care"))
    assert got["answer"] == ANSWER and got["usage"] == {"prompt_tokens": 100, "completion_tokens": 32}
