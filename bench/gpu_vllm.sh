#!/usr/bin/env bash
# bench/vllm_serving on a lent GPU machine, then (CMVA_TOO=1, the default) bench/serving's cmva predictor (bfloat16,
# packed) in the same call: vLLM and cmva's own engine as the chain's predictor, one machine.
#
#   here:  python -m bench.shape_clone pack RUN/serving/channels/staging .gpu/shapes
#          bash bench/gpu_wheels.sh      # .whl/: what cmva's serving stack lacks there
#          bash bench/vllm_payload.sh    # .vllm1/, .vllm2/, …: vLLM and its wheels, in parts of 58 MiB
#   there, one call per part:  mkdir -p /tmp/parts && mv .vllm*/part.* /tmp/parts/      (carrying .vllmK)
#   there, last:               bash bench/gpu_vllm.sh .gpu/shapes "$OUT"      (carrying .whl, .gpu, a small last part)
# Wheels in .vllm-extra/ install too: one found missing after the parts were cut travels without a new cut.
set -uo pipefail
shapes=${1:-.gpu/shapes}
out=${2:-bench/results/gpu_vllm}
py=${PY:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
# A warm machine keeps /tmp: each part installs once (the parts, .whl and the extra wheels travel in separate calls).
[ -d /tmp/site/kserve ] || "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/payload /tmp/vsite /tmp/parts
for f in .vllm[0-9]*/part.*; do [ -e "$f" ] && mv "$f" /tmp/parts/; done  # a part carried by this call
if [ ! -d /tmp/vsite/vllm ]; then
  cat ${PARTS:-/tmp/parts}/part.* | tar -C /tmp/payload -xf - && xz -d -T0 -c /tmp/payload/vllm-slim.tar.xz | tar -C /tmp/vsite -xf -
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/vsite /tmp/payload/deps/*.whl
fi
for w in .vllm-extra/*.whl; do  # a wheel found missing after the parts were cut
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
