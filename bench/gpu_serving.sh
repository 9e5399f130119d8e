#!/usr/bin/env bash
# bench/serving on a lent GPU machine, from the shapes of a trained run (bench/shape_clone) and carried wheels.
#
#   here:  python -m bench.shape_clone pack RUN/serving/channels/staging .gpu/shapes
#          pip download --no-deps … -d .whl (the packages that machine lacks; README "Serving on a GPU")
#   there: bash bench/gpu_serving.sh .gpu/shapes "$OUT"
#
# Installs .whl/*.whl into /tmp/site when cmva's serving stack does not import there, rebuilds the artifacts with
# random weights, then runs bench/serving: bfloat16 packed, float32 packed, bfloat16 separate; results in OUT/<dtype>-<topology>/.
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
for run in bfloat16:packed float32:packed bfloat16:separate; do  # most wanted first: each writes its own result
  "$py" -m bench.serving --artifacts "$art" --dtypes "${run%%:*}" --topologies "${run##*:}" --out "$out/${run/:/-}" \
    ${BENCH_ARGS:-} || echo "bench/serving ${run} FAILED (exit $?)"
done
