"""`POST /openai/v1/chat/completions` on KServe's FastAPI app, with the `openai` package's types.

kserve 0.21's own OpenAI module imports vLLM (CUDA-only); this route needs none of it. The moral profile
travels as an extra field: `client.chat.completions.create(..., extra_body={"profile": {"care": 1.0}})`.
"""

from __future__ import annotations

import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse


def _error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param}},
        headers=headers,
    )


def add_openai_route(app, model) -> None:
    """Register the chat-completions route for a CMVATransformer `model`."""
    from kserve.errors import InvalidInput
    from openai.types.chat import ChatCompletion

    from cmva.serving.errors import ChainError

    @app.post("/openai/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the JSON decoder allows
            return _error(400, "body: not valid JSON (or nested too deeply)")
        if not isinstance(body, dict):
            return _error(400, "body: expected a JSON object")
        if body.get("model") not in (None, model.name):
            return _error(404, f"model: {body.get('model')!r} is not served here; use {model.name!r}", "model")
        if body.get("stream"):
            return _error(400, "stream: streaming is not supported", "stream")
        messages = body.get("messages")
        if not isinstance(messages, list):
            return _error(400, "messages: expected a list of chat messages", "messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not isinstance(users[-1].get("content"), str):
            return _error(400, "messages: expected at least one user message with text content", "messages")
        if "profile" not in body:
            return _error(
                400, "profile: missing; pass the moral profile as an extra field, e.g. {'care': 1.0}", "profile"
            )
        v1 = {"instances": [{"question": users[-1]["content"], "profile": body["profile"]}]}
        if body.get("max_tokens") is not None:
            v1["parameters"] = {"max_new_tokens": body["max_tokens"]}
        try:
            result, _ = await model(v1, dict(request.headers))
        except InvalidInput as e:
            return _error(400, str(e), str(e).split(":")[0])
        except ChainError as e:  # 502 / 503 (Retry-After) in the OpenAI error shape
            return _error(e.status_code, str(e), headers=e.headers)
        pred = result["predictions"][0]
        completion = ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex[:16]}",
            object="chat.completion",
            created=int(time.time()),
            model=model.name,
            choices=[
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": pred["answer"]}}
            ],
        )
        out = completion.model_dump(exclude_none=True)
        out["cmva"] = {k: v for k, v in pred.items() if k != "answer"}
        return JSONResponse(out)
