"""The transformer's reader of an OpenAI chat-completions stream (`--predictor_api openai`: cmva's predictor or
vLLM): text deltas and the usage as events, every way it can break raised where the caller reads it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cmva.serving.aggregator_stream import StreamFailed, open_chat_stream
from cmva.serving.errors import BadGateway, ServiceUnavailable

URL = "http://aggregator/openai/v1/chat/completions"


def _chunk(delta: dict | None = None, usage: dict | None = None) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "aggregator", "choices": choices}
    if usage is not None:
        body["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return f"data: {json.dumps(body)}\n\n"


USAGE = {"prompt_tokens": 40, "completion_tokens": 2}


def _read(status: int, body: str, sent: list | None = None) -> list[dict]:
    def answer(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append(json.loads(request.content))
        return httpx.Response(status, content=body.encode(), headers={"content-type": "text/event-stream"})

    async def run() -> list[dict]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            events = await open_chat_stream(client, URL, {"model": "aggregator", "messages": []})
            return [e async for e in events]

    return asyncio.run(run())


def test_deltas_then_usage_as_events():
    sent: list = []
    body = _chunk({"role": "assistant", "content": ""}) + _chunk({"content": "Be"}) + _chunk({"content": " kind"})
    body += ": a comment line\n\n" + _chunk({}) + _chunk(usage=USAGE) + "data: [DONE]\n\n"
    assert _read(200, body, sent) == [{"text": "Be"}, {"text": " kind"}, {"usage": USAGE}]
    assert sent[0]["stream"] is True and sent[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_chunk({"content": "Be"}) + 'data: {"error": {"message": "CUDA out of memory"}}\n\n', "CUDA out of memory"),
        (_chunk({"content": "Be"}) + "data: {not json\n\n", "malformed event"),
        ('data: {"id": 3}\n\n', "malformed event"),
        (_chunk({"content": "Be"}) + "data: [DONE]\n\n", "ended its stream before the answer was complete"),
        (_chunk({"content": "Be"}), "ended its stream before the answer was complete"),
    ],
)
def test_a_broken_stream_raises_where_it_is_read(body, message):
    with pytest.raises(StreamFailed, match=message):
        _read(200, body)


@pytest.mark.parametrize(("status", "error", "says"), [(404, BadGateway, "refused"), (500, ServiceUnavailable, "500")])
def test_a_refused_stream_fails_before_it_starts(status, error, says):
    with pytest.raises(error, match=says):
        _read(status, '{"error": {"message": "model: no such adapter"}}')


def test_an_unreachable_predictor_is_503():
    async def run():
        async with httpx.AsyncClient() as client:
            await open_chat_stream(client, "http://127.0.0.1:9/openai/v1/chat/completions", {"model": "aggregator"})

    with pytest.raises(ServiceUnavailable, match="unreachable"):
        asyncio.run(run())
