"""A streamed chat completion as OpenAI server-sent events, built with the `openai` package's types.

`data: {chat.completion.chunk}` events: the first carries the role and, as the extra field `cmva`, the
agents' part of the answer (agents, skipped, missing, degraded); then one per text delta of the aggregator's
answer as it is generated; then an empty delta with `finish_reason`; with `stream_options.include_usage`,
a chunk with no choices and the usage; then `data: [DONE]`. A failure after the stream has started ends
it with an error event (`data: {"error": {...}}`, which the `openai` client raises as an APIError).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi.sse import format_sse_event

log = logging.getLogger(__name__)

DONE = format_sse_event(data_str="[DONE]")


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:16]}"


def usage_of(counts: dict | None):
    """The aggregator's {"prompt_tokens", "completion_tokens"} as the `openai` package's CompletionUsage."""
    from openai.types import CompletionUsage

    if counts is None:
        return None
    prompt, completion = counts["prompt_tokens"], counts["completion_tokens"]
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class ChunkWriter:
    """The chunks of one completion (same id, creation time and model)."""

    def __init__(self, model: str):
        self.id, self.created, self.model = completion_id(), int(time.time()), model

    def chunk(self, choices: list[dict], usage=None, **extra) -> bytes:
        from openai.types.chat import ChatCompletionChunk

        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
        )
        return format_sse_event(data_str=json.dumps({**chunk.model_dump(exclude_none=True), **extra}))

    def delta(self, delta: dict, finish_reason: str | None = None, **extra) -> bytes:
        return self.chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra)


def error_event(message: str) -> bytes:
    return format_sse_event(data_str=json.dumps({"error": {"message": message, "type": "server_error", "param": None}}))


async def chat_events(
    model: str, meta: dict | None, events: AsyncIterator[dict], include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE events of a completion whose agents' part is `meta` (None: a predictor's own completion, no
    `cmva` field) and whose answer comes as `events` ({"text"} …, then {"usage"}: cmva.serving.aggregator_stream,
    cmva.serving.streaming.generation_events)."""
    out = ChunkWriter(model)
    yield out.delta({"role": "assistant", "content": ""}, **({} if meta is None else {"cmva": meta}))
    counts = None
    try:
        async with aclosing(events):  # a client gone: the aggregator's stream (and generation) closes now
            async for event in events:
                if "text" in event:
                    yield out.delta({"content": event["text"]})
                else:
                    counts = event["usage"]
    except Exception as e:  # the status line is sent: end the stream with the error instead of hanging
        log.warning("chat completion stream failed: %r", e)
        yield error_event(f"the answer's stream failed: {e}")
        return
    yield out.delta({}, "stop")
    if include_usage:
        yield out.chunk([], usage=usage_of(counts))
    yield DONE
