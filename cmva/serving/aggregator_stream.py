"""The transformer's side of the aggregator predictor's stream (cmva.serving.stream_route).

`open_stream` sends the request and waits for the status: a predictor down is 503, one refusing the request
502 (or 503 for its own 5xx), all raised before the caller starts its own stream. The events then come as
they are generated; one that reports an error, a malformed line, or a stream ending before its usage raise
`StreamFailed` where the caller reads them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from cmva.serving.errors import BadGateway, ServiceUnavailable


class StreamFailed(RuntimeError):
    """The aggregator's stream broke after it had started."""


def aggregator_error(status: int, text: str) -> Exception:
    """The chain's error for an aggregator predictor answering `status`: 503 for its 5xx, else 502."""
    text = text[:300]
    if status >= 500:
        return ServiceUnavailable(f"aggregator predictor failed with {status}: {text}")
    return BadGateway(f"aggregator predictor refused the request with {status}: {text}")


async def open_stream(client: httpx.AsyncClient, url: str, body: dict) -> AsyncIterator[dict]:
    """The aggregator's stream events for `body`: {"text": delta} …, then {"usage": {...}}."""
    try:
        response = await client.send(client.build_request("POST", url, json=body), stream=True)
    except httpx.TransportError as e:
        raise ServiceUnavailable(f"aggregator predictor {url} unreachable: {e!r}") from None
    if response.is_error:
        await response.aread()
        await response.aclose()
        raise aggregator_error(response.status_code, response.text)
    return _events(response)


async def _events(response: httpx.Response) -> AsyncIterator[dict]:
    try:
        async for line in response.aiter_lines():
            if line.strip():
                event = _event(line)
                yield event
                if "usage" in event:
                    return
        raise StreamFailed("aggregator predictor ended its stream before the answer was complete")
    finally:
        await response.aclose()


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
