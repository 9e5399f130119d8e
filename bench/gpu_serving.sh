#!/usr/bin/env bash
# bench/serving on a lent GPU machine, from the shapes of a trained run (bench/shape_clone) and carried wheels.
#
#   here:  python -m bench.shape_clone pack RUN/serving/channels/staging .gpu/shapes
#          bash bench/gpu_wheels.sh          # .whl/: the packages that machine lacks, at the lock's versions
#   there: bash bench/gpu_serving.sh .gpu/shapes "$OUT"
#
# Installs .whl/*.whl into /tmp/site when cmva's serving stack does not import there, rebuilds the artifacts with
# random weights, then runs bench/decode_modes (DECODE_MODES=0: not) and bench/serving for each RUNS entry (default
# "bfloat16:packed float32:packed"; add bfloat16:separate where time allows); results in OUT/<dtype>-<topology>/.
set -euo pipefail
shapes=${1:-.gpu/shapes}
out=${2:-bench/results/gpu}
py=${PY:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ! "$py" -c "import kserve, openai" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv || true
"$py" -c "import torch, transformers, peft, kserve; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'transformers', transformers.__version__, 'peft', peft.__version__)"
art=bench/.work/shape-run
rm -rf "$art"
"$py" -m bench.shape_clone unpack "$shapes" "$art"
if [ "${DECODE_MODES:-1}" != 0 ]; then  # eager / static cache / compiled (CUDA graphs) / bfloat16, one generation
  "$py" -m bench.decode_modes --base "$art/base" --out "$out/decode_modes" || echo "bench/decode_modes FAILED (exit $?)"
fi
for run in ${RUNS:-bfloat16:packed float32:packed}; do  # most wanted first: each writes its own result
  "$py" -m bench.serving --artifacts "$art" --dtypes "${run%%:*}" --topologies "${run##*:}" --out "$out/${run/:/-}" \
    ${BENCH_ARGS:-} || echo "bench/serving ${run} FAILED (exit $?)"
done
