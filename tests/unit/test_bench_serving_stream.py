"""bench/serving's time to first token, read from the transformer's own stream (cmva.serving.openai_stream)
served by a mock transport: the first chunk of aggregator text counts, never the agents' `cmva` chunk."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from bench.serving_stream import StreamError, sse_data, time_to_first_token
from cmva.serving.openai_stream import chat_events

META = {"agents": {"care": {"answer": "Be kind."}}, "skipped": [], "missing": [], "degraded": False}


def canned(events: list) -> bytes:
    """The SSE bytes the transformer sends for an aggregator stream of `events` (an exception: raised there)."""

    async def aggregator():
        for e in events:
            if isinstance(e, Exception):
                raise e
            yield e

    async def collect():
        return b"".join([b async for b in chat_events("cmva", META, aggregator(), include_usage=True)])

    return asyncio.run(collect())


def ttft(raw: bytes, status: int = 200):
    """time_to_first_token over a mock transport, with a clock that ticks once per reading: the result is the
    position of the first answer chunk among the events (1 = the first event)."""
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(status, content=raw, headers={"content-type": "text/event-stream"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        out = time_to_first_token(client, "http://chain", {"messages": []}, clock=itertools.count().__next__)
    assert sent[0]["stream"] is True
    return out


def test_first_token_is_the_first_aggregator_chunk_not_the_agents_extra():
    usage = {"usage": {"prompt_tokens": 9, "completion_tokens": 2}}
    first, meta = ttft(canned([{"text": "Tell"}, {"text": " her."}, usage]))
    assert first == 2  # event 1: role + the `cmva` extra (empty content); event 2: "Tell"
    assert meta == META


def test_a_cmva_chunk_with_content_is_not_the_answer():
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "x"}}], "cmva": META},
        {"choices": [{"index": 0, "delta": {"content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Yes"}}]},
    ]
    raw = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    assert ttft(raw)[0] == 3


def test_an_answer_without_text_has_no_first_token():
    assert ttft(canned([{"usage": {"prompt_tokens": 9, "completion_tokens": 4}}])) == (None, META)


@pytest.mark.parametrize(
    "raw, match",
    [
        (canned([{"text": "So far"}, RuntimeError("out of memory")]), "stream failed"),
        (canned([{"text": "So far"}, {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}])[:-14], "before"),
    ],
)
def test_a_broken_stream_raises(raw, match):
    with pytest.raises(StreamError, match=match):
        ttft(raw)


def test_a_refused_request_raises_with_its_status():
    with pytest.raises(StreamError, match="400"):
        ttft(b'{"error": {"message": "profile: missing"}}', status=400)


def test_sse_data_joins_multi_line_events():
    assert list(sse_data(["data: a", "data: b", "", "data: c"])) == ["a\nb", "c"]
