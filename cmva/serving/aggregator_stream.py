"""The transformer's side of the aggregator predictor's stream: cmva's V1 `:stream` route (NDJSON,
cmva.serving.stream_route) with `open_stream`, or an OpenAI chat-completions stream (server-sent
`chat.completion.chunk` events, from cmva's predictor or vLLM) with `open_chat_stream`.

Both send the request and wait for the status: a predictor down is 503, one refusing the request 502 (or 503
for its own 5xx), all raised before the caller starts its own stream. The events then come as they are
generated, the same for both: {"text": delta} …, then {"usage": {"prompt_tokens", "completion_tokens"}}; one
that reports an error, a malformed line, or a stream ending before its usage raise `StreamFailed` where the
caller reads them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import httpx

from cmva.serving.errors import BadGateway, ServiceUnavailable
from cmva.serving.text_deltas import stripped


class StreamFailed(RuntimeError):
    """The aggregator's stream broke after it had started."""


def aggregator_error(status: int, text: str) -> Exception:
    """The chain's error for an aggregator predictor answering `status`: 503 for its 5xx, else 502."""
    text = text[:300]
    if status >= 500:
        return ServiceUnavailable(f"aggregator predictor failed with {status}: {text}")
    return BadGateway(f"aggregator predictor refused the request with {status}: {text}")


async def open_stream(client: httpx.AsyncClient, url: str, body: dict) -> AsyncIterator[dict]:
    """The aggregator's stream events for the V1 `body`: {"text": delta} …, then {"usage": {...}}."""
    return _events(await _open(client, url, body), _ndjson_events)


async def open_chat_stream(client: httpx.AsyncClient, url: str, body: dict) -> AsyncIterator[dict]:
    """The same events for a chat-completions `body` (`stream` and `stream_options.include_usage` set here)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    return _stripped_text(_events(await _open(client, url, body), _sse_events))


async def _stripped_text(events: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """`events` with their text stripped as a whole answer is (cmva.serving.chat_calls.completion_of): vLLM's
    answers begin with their first token's space. Closing this closes `events` (and the predictor's stream)."""
    tail: list[dict] = []

    async def texts() -> AsyncIterator[str]:
        async for e in events:
            if "text" in e:
                yield e["text"]
            else:
                tail.append(e)  # the usage, which ends the events

    async with aclosing(events), aclosing(texts()) as raw, aclosing(stripped(raw)) as deltas:
        async for d in deltas:
            yield {"text": d}
    for e in tail:
        yield e


async def _open(client: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    try:
        response = await client.send(client.build_request("POST", url, json=body), stream=True)
    except httpx.TransportError as e:
        raise ServiceUnavailable(f"aggregator predictor {url} unreachable: {e!r}") from None
    if response.is_error:
        await response.aread()
        await response.aclose()
        raise aggregator_error(response.status_code, response.text)
    return response


async def _events(response: httpx.Response, parse: Callable[[str], list[dict]]) -> AsyncIterator[dict]:
    """The events `parse` finds in each line of the response, up to and with the usage."""
    try:
        async for line in response.aiter_lines():
            for event in parse(line):
                yield event
                if "usage" in event:
                    return
        raise StreamFailed("aggregator predictor ended its stream before the answer was complete")
    finally:
        await response.aclose()


def _ndjson_events(line: str) -> list[dict]:
    return [_event(line)] if line.strip() else []


def _event(line: str) -> dict:
    try:
        event = json.loads(line)
    except ValueError:
        raise StreamFailed(f"aggregator predictor streamed a malformed line: {line[:300]}") from None
    if not isinstance(event, dict) or not ({"text", "usage", "error"} & set(event)):
        raise StreamFailed(f"aggregator predictor streamed an unknown event: {line[:300]}")
    if "error" in event:
        raise StreamFailed(str(event["error"]))
    return event


def _sse_events(line: str) -> list[dict]:
    """The events of one server-sent-events line: none for the blank line ending an event, comments, other fields
    and the closing `data: [DONE]` (which comes after the usage, or the stream was cut short)."""
    data = line.removeprefix("data:").strip()
    if not line.startswith("data:") or data == "[DONE]":
        return []
    return _chunk_events(data)


def _chunk_events(data: str) -> list[dict]:
    """The text delta and the usage of one `chat.completion.chunk` (an error event raises StreamFailed)."""
    from openai.types.chat import ChatCompletionChunk

    try:
        raw = json.loads(data)
        if isinstance(raw, dict) and "error" in raw:
            error = raw["error"]
            raise StreamFailed(str(error.get("message", error) if isinstance(error, dict) else error))
        chunk = ChatCompletionChunk.model_validate(raw)
    except ValueError:  # not JSON, or not a chunk (pydantic's ValidationError is a ValueError)
        raise StreamFailed(f"aggregator predictor streamed a malformed event: {data[:300]}") from None
    events = [{"text": c.delta.content} for c in chunk.choices if c.delta.content]
    if (usage := token_counts(chunk.usage)) is not None:
        events.append({"usage": usage})
    return events


def token_counts(usage) -> dict | None:
    """{"prompt_tokens", "completion_tokens"} of an `openai` CompletionUsage (None: none reported)."""
    return usage and {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
