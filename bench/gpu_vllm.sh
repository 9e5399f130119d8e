#!/usr/bin/env bash
# bench/vllm_serving on a lent GPU machine, then bench/serving's cmva predictor (bfloat16, packed) in the same call:
# vLLM and cmva's own engine as the chain's predictor, before/after on one machine.
#
#   here:  python -m bench.shape_clone pack RUN/serving/channels/staging .gpu/shapes
#          bash bench/gpu_wheels.sh                 # .whl/: what cmva's serving stack lacks there
#          .vllm*/part.*: one tar (split to travel in calls of 64 MiB) of vllm-slim.tar.xz (the vLLM wheel's tree
#          without what this GPU and model do not load: the FA2 and MoE kernels, the sm100 sources, the Rust
#          frontend) and deps/ (the wheels vLLM needs beyond the image's and cmva's)
#   there: bash bench/gpu_vllm.sh .gpu/shapes "$OUT"
set -uo pipefail
shapes=${1:-.gpu/shapes}
out=${2:-bench/results/gpu_vllm}
py=${PY:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
# A warm machine keeps /tmp: each part installs once (the parts, .whl and the extra wheels travel in separate calls).
[ -d /tmp/site/kserve ] || "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/payload /tmp/vsite
if [ ! -d /tmp/vsite/vllm ]; then
  cat ${PARTS:-/tmp/parts}/part.* | tar -C /tmp/payload -xf - && xz -d -T0 -c /tmp/payload/vllm-slim.tar.xz | tar -C /tmp/vsite -xf -
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/vsite /tmp/payload/deps/*.whl
fi
for w in .vllm3/*.whl; do  # wheels found missing after the parts were cut (flashinfer: vLLM's sampler imports it)
  [ -e "$w" ] && "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/vsite "$w"
done
echo "installed in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
art=bench/.work/shape-run
rm -rf "$art"
"$py" -m bench.shape_clone unpack "$shapes" "$art"
mkdir -p "$out"
timeout ${VLLM_TIMEOUT:-330} "$py" -m bench.vllm_serving --artifacts "$art" --vllm-path /tmp/vsite --out "$out/vllm" ${VLLM_ARGS:-} \
  || { echo "bench/vllm_serving FAILED (exit $?)"; tail -60 bench/.work/serve-logs-vllm/vllm.log; }
cp bench/.work/serve-logs-vllm/vllm.log "$out/vllm-server.log" 2>/dev/null
if [ "${CMVA_TOO:-1}" != 0 ]; then
  timeout ${CMVA_TIMEOUT:-180} "$py" -m bench.serving --artifacts "$art" --dtypes bfloat16 --topologies packed --out "$out/cmva" \
    || echo "bench/serving FAILED (exit $?)"
fi
