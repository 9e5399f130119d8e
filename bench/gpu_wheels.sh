#!/usr/bin/env bash
# The wheels bench/gpu_serving.sh needs on a lent GPU machine (Python 3.12, torch and numpy already there, no package
# registry), at the versions of requirements/constraints.txt, into .whl/ (ignored by git; carried with the call).
# The list: what cmva's serving stack, bench/serving and their imports load at run time that the machine's image
# lacks, plus transformers, tokenizers, huggingface-hub, peft and sentence-transformers, which it has at other
# versions. ≈ 45 MB (kubernetes-validate and boto3, optional imports of kubernetes and accelerate, are left out).
set -euo pipefail
pkgs="annotated-types blinker cffi cloudevents cryptography datasets deprecation dill fastapi google-api-core
google-auth google-cloud-core google-cloud-storage google-resumable-media googleapis-common-protos grpc-interceptor
grpcio grpcio-tools httpcore2 httpx2 huggingface-hub importlib-resources jsonpointer jsonschema
jsonschema-specifications kserve kubernetes multiprocess oauthlib openai opentelemetry-api orjson peft protobuf
pydantic pydantic-core pydantic-settings python-dotenv python-multipart pytz referencing requests-oauthlib
rfc3339-validator rpds-py sentence-transformers sniffio starlette timing-asgi tokenizers transformers truststore
typing-inspection uvicorn watchfiles websocket-client"
pins=()
for p in $pkgs; do
  pin=$(grep -iE "^${p//-/[-_.]}==" requirements/constraints.txt) || { echo "$p: not in requirements/constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
du -sh .whl
