"""The predictors' OpenAI chat-completions route: `POST /openai/v1/chat/completions`, the adapter named by
`model` (a moral value on an agents predictor, `aggregator` on the aggregator's; a packed predictor serves all),
greedy decoding (temperature absent or 0), an OpenAI `ChatCompletion` with `usage`; with `stream: true`, the
answer as `chat.completion.chunk` server-sent events while it is generated (its own batch, as the V1 `:stream`
route's; `stream_options.include_usage` adds the usage chunk), as vLLM streams.

Each request is one generation job in the backend's batcher: concurrent requests batch together, under the same
work budget (`--max_request_tokens`) and queue limit (`--max_queue`, 503 + Retry-After) as the V1 routes.
Bad input: 4xx in the OpenAI error shape naming the field (an adapter not served here: 404 naming `model`).
This is what the transformer asks with `--predictor_api openai` (cmva.serving.chat_calls), as it asks vLLM.
"""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse

from cmva.serving.chat_request import chat_job
from cmva.serving.openai_request import RequestError, read_body
from cmva.serving.openai_route import error_response
from cmva.serving.openai_stream import chat_events, completion_id, usage_of
from cmva.serving.streaming import generation_events


def add_chat_route(app, backend, max_request_tokens: int) -> None:
    """Register the route for a loaded-on-start SharedBackend (cmva.serving.predictors)."""
    from kserve.errors import InvalidInput

    from cmva.serving.errors import ChainError
    from cmva.serving.limits import check_work_budget

    @app.post("/openai/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await read_body(request)
            job = chat_job(body, backend.adapters)
            check_work_budget(1, job.max_tokens, max_request_tokens)
            if backend.batcher is None:
                return error_response(503, "model: the adapters are still loading", "model", {"Retry-After": "5"})
            if job.stream:
                stream = backend.batcher.stream(job.messages, job.adapter, job.max_tokens, job.min_tokens)
                events = chat_events(job.adapter, None, generation_events(stream), job.include_usage)
                return EventSourceResponse(events)
            (done,) = await backend.batcher.complete([job.messages], [job.adapter], job.max_tokens, job.min_tokens)
        except RequestError as e:
            return error_response(e.status, str(e), e.param)
        except InvalidInput as e:  # the work budget
            return error_response(400, f"max_tokens: {str(e).split(': ', 1)[-1]}", "max_tokens")
        except ChainError as e:  # a full queue: 503 with Retry-After
            return error_response(e.status_code, str(e), headers=e.headers)
        return JSONResponse(_completion(job.adapter, done))


def _completion(adapter: str, done) -> dict:
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion(
        id=completion_id(),
        object="chat.completion",
        created=int(time.time()),
        model=adapter,
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": done.text}}],
        usage=usage_of({"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens}),
    )
    return completion.model_dump(exclude_none=True)
