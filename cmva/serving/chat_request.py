"""A chat-completions body sent to a predictor (`POST /openai/v1/chat/completions`, the adapter named by
`model`) → one generation job, or RequestError naming the field (cmva.serving.openai_request)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from cmva.serving.openai_request import RequestError, json_object, served_model, stream_fields
from cmva.serving.schemas import Parameters

ROLES = ("system", "user", "assistant")
MAX_MESSAGES_CHARS = 32_000  # the aggregator's prompt: a question and five answers, with room to spare


@dataclass(frozen=True)
class ChatJob:
    adapter: str
    messages: list[dict[str, str]]
    max_tokens: int
    min_tokens: int
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


def chat_job(body, adapters: list[str]) -> ChatJob:
    """Raises:
    RequestError: 400 for a malformed body or field, 404 for a `model` (adapter) not served here."""
    json_object(body)
    adapter = served_model(body, adapters)
    stream, include_usage = stream_fields(body)
    _greedy(body.get("temperature"))
    max_tokens, min_tokens = _tokens(body)
    return ChatJob(adapter, _messages(body.get("messages")), max_tokens, min_tokens, stream, include_usage)


def _greedy(temperature) -> None:
    """Only greedy decoding is served: temperature absent or 0."""
    if temperature is not None and (isinstance(temperature, bool) or temperature != 0):
        raise RequestError(400, f"temperature: only 0 (greedy decoding) is served, got {temperature!r}", "temperature")


def _tokens(body: dict) -> tuple[int, int]:
    """(max_tokens, min_tokens) within the limits of the V1 routes' `parameters`."""
    fields = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}
    given = {v1: body[name] for name, v1 in fields.items() if body.get(name) is not None}
    try:
        p = Parameters.model_validate(given)
    except ValidationError as e:
        err = e.errors()[0]
        name = next((n for n, v1 in fields.items() if v1 in err["loc"]), "max_tokens")
        raise RequestError(400, f"{name}: {err['msg'].removeprefix('Value error, ')}", name) from None
    return p.max_new_tokens, p.min_new_tokens


def _messages(messages) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: expected a non-empty list of chat messages", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RequestError(400, f"messages.{i}: expected {{'role': one of {ROLES}, 'content': text}}", "messages")
        out.append({"role": m["role"], "content": m["content"]})
    if sum(len(m["content"]) for m in out) > MAX_MESSAGES_CHARS:
        raise RequestError(400, f"messages: more than {MAX_MESSAGES_CHARS} characters in all", "messages")
    return out
