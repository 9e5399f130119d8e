"""The OpenAI API on KServe's FastAPI app, with the `openai` package's types:

- `POST /openai/v1/chat/completions`: the answer, with the aggregator's token counts as `usage`; with
  `stream: true`, the aggregator's answer as server-sent events while it is generated (cmva.serving.openai_stream);
- `GET /openai/v1/models`, `GET /openai/v1/models/{model}`: the one model served.

kserve 0.21's own OpenAI module imports vLLM (CUDA-only); these routes need none of it. The moral profile
travels as an extra field: `client.chat.completions.create(..., extra_body={"profile": {"care": 1.0}})`.
Bad input is refused (4xx naming the field) before any stream starts.
"""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse

from cmva.serving.openai_request import RequestError, chat_request, read_body
from cmva.serving.openai_stream import chat_events, completion_id, usage_of


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param}},
        headers=headers,
    )


def add_openai_route(app, model) -> None:
    """Register the OpenAI routes for a CMVATransformer `model`."""
    from kserve.errors import InvalidInput

    from cmva.serving.errors import ChainError

    @app.post("/openai/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await read_body(request)
            req = chat_request(body, model.name)
            if req.stream:
                meta, events = await model.stream(req.v1, dict(request.headers))
                return EventSourceResponse(chat_events(model.name, meta, events, req.include_usage))
            pred, counts = await model.answer(req.v1, dict(request.headers))
        except RequestError as e:
            return error_response(e.status, str(e), e.param)
        except InvalidInput as e:
            return error_response(400, str(e), str(e).split(":")[0])
        except ChainError as e:  # 502 / 503 (Retry-After) in the OpenAI error shape
            return error_response(e.status_code, str(e), headers=e.headers)
        return JSONResponse(_completion(model.name, pred, counts))

    add_models_routes(app, model.name)


def _completion(name: str, pred: dict, counts: dict | None) -> dict:
    """The chat.completion of a transformer prediction, its agents' part as the extra field `cmva`."""
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion(
        id=completion_id(),
        object="chat.completion",
        created=int(time.time()),
        model=name,
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": pred["answer"]}}],
        usage=usage_of(counts),
    )
    out = completion.model_dump(exclude_none=True)
    out["cmva"] = {k: v for k, v in pred.items() if k != "answer"}
    return out


def add_models_routes(app, name: str) -> None:
    """`GET /openai/v1/models` (the list: this one model) and `GET /openai/v1/models/{model}`."""
    from openai.types import Model

    served = Model(id=name, object="model", created=int(time.time()), owned_by="cmva").model_dump(exclude_none=True)

    @app.get("/openai/v1/models")
    async def list_models():
        return {"object": "list", "data": [served]}

    @app.get("/openai/v1/models/{model_id}")
    async def retrieve_model(model_id: str):
        if model_id != name:
            return error_response(404, f"model: {model_id!r} is not served here; use {name!r}", "model")
        return served
