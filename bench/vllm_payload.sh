#!/usr/bin/env bash
# The vLLM that bench/gpu_vllm.sh runs on a lent GPU machine, cut to travel in calls of at most 64 MiB.
#
#   bash bench/vllm_payload.sh        # → .vllm1/part.aa, .vllm2/part.ab, … (ignored by git)
#
# vLLM 0.26.0 is the newest release built for that machine's torch 2.11.0+cu130 (0.27 and later pin torch 2.13
# and 2.14). Its wheel (297 MB) loses what neither an H200 nor this Llama model loads: the FlashAttention-2 kernels
# (Hopper runs FlashAttention 3), the MoE and QuTLASS kernels, FlashMLA, the sm100 sources (deep_gemm, fmha_sm100),
# the Rust frontend and the Swagger UI; the rest, as a tar.xz (72 MB), goes with the wheels of bench/vllm_deps.txt
# (52 MB) into one tar, split in parts of 58 MiB. Each part travels in its own call (`carry: [".vllmK"]`), which
# moves it to /tmp/parts: a warm machine keeps /tmp, not the ignored paths of the call before. The last call
# carries .whl/ and .gpu/ (and the last part, when it is small: 4 MiB for 0.26.0, three parts in all) and runs
# gpu_vllm.sh. The calls follow each other within the machine's 30 s of idle.
set -euo pipefail
work=${WORK:-/tmp/vllm-payload}
rm -rf "$work" && mkdir -p "$work/tree" "$work/payload/deps"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_35_x86_64
  --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work" vllm==0.26.0
unzip -q "$work"/vllm-0.26.0-*.whl -d "$work/tree"
v="$work/tree/vllm"
rm -rf "$v"/vllm_flash_attn/_vllm_fa2_C.abi3.so "$v"/_moe_C_stable_libtorch.abi3.so "$v"/_qutlass_C.abi3.so \
  "$v"/_flashmla_C.abi3.so "$v"/third_party/fmha_sm100 "$v"/third_party/deep_gemm "$v"/vllm-rs \
  "$v"/entrypoints/serve/instrumentator/static
tar -C "$work/tree" -cf - . | xz -T0 -6 > "$work/payload/vllm-slim.tar.xz"
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/payload/deps" -r bench/vllm_deps.txt
tar -C "$work/payload" -cf "$work/payload.tar" .
split -b 58m "$work/payload.tar" "$work/part."
rm -rf .vllm[0-9]*
k=0
for part in "$work"/part.*; do
  k=$((k + 1))
  mkdir ".vllm$k" && mv "$part" ".vllm$k/"
done
grep -qx '/.vllm\*/' .git/info/exclude || echo '/.vllm*/' >> .git/info/exclude
du -sh .vllm[0-9]*
