"""Where a predictor that speaks the OpenAI protocol answers (`--predictor_api openai`), by kind of server.

- `kserve`: KServe's model servers (its Hugging Face runtime with vLLM or Hugging Face backends, and cmva's own
  predictors) mount the OpenAI routes under `/openai` and say they are ready on `/v2/health/ready`.
- `vllm`: vLLM's own server (`vllm serve`, the container of a KServe LLMInferenceService) serves
  `/v1/chat/completions` and answers `/health` with 200 and an empty body once its engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpenAIServer:
    chat_path: str
    ready_path: str


SERVERS = {
    "kserve": OpenAIServer("/openai/v1/chat/completions", "/v2/health/ready"),
    "vllm": OpenAIServer("/v1/chat/completions", "/health"),
}
KSERVE = SERVERS["kserve"]
