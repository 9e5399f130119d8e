"""Time to first token of the chain's final answer (bench/serving): one streamed OpenAI chat completion.

The transformer's stream (cmva.serving.openai_stream) opens with a chunk carrying the agents' part of the
answer as the extra field `cmva` (and an empty content delta); the aggregator's text follows as content
deltas. The time to first token is the time from sending the request to the first chunk with aggregator
text: after every agent has answered and the aggregator has produced its first visible (non-whitespace) text.
The stream is read to its end, so the next request never overlaps this one's generation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator

import httpx


class StreamError(RuntimeError):
    """The chain's stream reported an error, or ended without `[DONE]`."""


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event in `lines` (the data lines of one event joined by newlines).

    >>> list(sse_data(["data: {}", "", ": a comment", "data: a", "data: b", "", "data: [DONE]", ""]))
    ['{}', 'a\\nb', '[DONE]']
    """
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def is_answer_chunk(chunk: dict) -> bool:
    """Whether a chunk carries the aggregator's text: a non-empty content delta, never the agents' `cmva` chunk."""
    if "cmva" in chunk:
        return False
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def time_to_first_token(
    client: httpx.Client, url: str, body: dict, clock: Callable[[], float] = time.perf_counter
) -> tuple[float | None, dict]:
    """(seconds to the first chunk of aggregator text, or None when the answer had none; the `cmva` extra)
    of one streamed request `body` (`stream` is set here) to the transformer at `url`."""
    t0 = clock()
    first, meta, done = None, {}, False
    with client.stream("POST", f"{url}/openai/v1/chat/completions", json={**body, "stream": True}) as r:
        if r.is_error:
            r.read()
            raise StreamError(f"streaming request refused with {r.status_code}: {r.text[:300]}")
        for data in sse_data(r.iter_lines()):
            now = clock()
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise StreamError(f"the chain's stream failed: {chunk['error']}")
            meta = chunk.get("cmva", meta)
            if first is None and is_answer_chunk(chunk):
                first = now - t0
    if not done:
        raise StreamError("the chain's stream ended before [DONE]")
    return first, meta
