"""An OpenAI chat-completions body → the transformer's V1 request, or RequestError naming the field."""

from __future__ import annotations

from dataclasses import dataclass


class RequestError(Exception):
    """A request the OpenAI route refuses: `status`, and the message naming the field `param`."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class ChatRequest:
    v1: dict  # {"instances": [one], "parameters"?}: validated further by the transformer
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage


def chat_request(body, model_name: str) -> ChatRequest:
    """Raises:
    RequestError: 400 for a malformed body or field, 404 for a model not served here."""
    json_object(body)
    served_model(body, [model_name], default=model_name)
    stream, include_usage = stream_fields(body)
    v1 = {"instances": [{"question": _question(body.get("messages")), "profile": _profile(body)}]}
    fields = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}  # min_tokens: vLLM's extra, cmva's too
    parameters = {v1_name: body[name] for name, v1_name in fields.items() if body.get(name) is not None}
    if parameters:
        v1["parameters"] = parameters  # validated (type, limits) by the transformer, naming the V1 field
    return ChatRequest(v1, stream, include_usage)


async def read_body(request) -> object:
    """The request's JSON body.

    Raises:
        RequestError: 400 when it is not JSON, or nested deeper than the JSON decoder allows (RecursionError).
    """
    try:
        return await request.json()
    except (ValueError, RecursionError):
        raise RequestError(400, "body: not valid JSON (or nested too deeply)") from None


def json_object(body) -> dict:
    if not isinstance(body, dict):
        raise RequestError(400, "body: expected a JSON object")
    return body


def served_model(body: dict, served: list[str], default: str | None = None) -> str:
    """The body's `model`, one of `served` (`default` when absent and there is one); 404 naming `model`."""
    model = body.get("model")
    if model is None:
        model = default
    names = " or ".join(map(repr, served))
    if model is None:
        raise RequestError(400, f"model: missing; use {names}", "model")
    if model not in served:
        raise RequestError(404, f"model: {model!r} is not served here; use {names}", "model")
    return model


def stream_fields(body: dict) -> tuple[bool, bool]:
    """(stream, stream_options.include_usage) of a chat-completions body; 400 naming the field."""
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError(400, f"stream: expected true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError(400, 'stream_options: expected an object such as {"include_usage": true}', "stream_options")
    return stream, stream and options.get("include_usage", False)


def _question(messages) -> str:
    if not isinstance(messages, list):
        raise RequestError(400, "messages: expected a list of chat messages", "messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        raise RequestError(400, "messages: expected at least one user message with text content", "messages")
    return users[-1]["content"]


def _profile(body: dict):
    if "profile" not in body:
        raise RequestError(
            400, "profile: missing; pass the moral profile as an extra field, e.g. {'care': 1.0}", "profile"
        )
    return body["profile"]
