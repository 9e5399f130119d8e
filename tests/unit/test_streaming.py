"""The batcher's streamed generation (cmva.serving.streaming): its deltas add up to the batched answer, a
reader going away stops it, a full queue refuses it before any text, a failure midway ends it with the error."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from cmva.engine import BASE, Completion, Engine
from cmva.models import load_tokenizer
from cmva.prompts import agent_messages
from cmva.serving.batcher import MicroBatcher
from cmva.serving.errors import ServiceUnavailable

QS = ["Should I lend my brother money?", "Is it fine to lie to a friend to spare them?"]


@pytest.fixture(scope="module")
def engine(tiny_base):
    return Engine(tiny_base)


def test_stream_adds_up_to_the_batched_answer(engine):
    async def run():
        b = MicroBatcher(engine)
        for q in QS:
            (whole,) = await b.complete([agent_messages(q)], [BASE], 120)
            stream = b.stream(agent_messages(q), BASE, 120)
            deltas = [d async for d in stream.deltas()]
            assert len(deltas) > 1 and "".join(deltas) == whole.text != ""
            assert await stream.completion() == whole  # the same token counts

    asyncio.run(run())


def test_reader_going_away_stops_the_generation(engine):
    forwards = []
    hook = engine.model.register_forward_hook(lambda *_: forwards.append(1))  # one forward pass per token

    async def run():
        b = MicroBatcher(engine)
        stream = b.stream(agent_messages(QS[0]), BASE, 512, 512)
        deltas = stream.deltas()
        await anext(deltas)
        await deltas.aclose()  # the reader leaves after its first delta
        await b.complete([agent_messages(QS[1])], [BASE], 1)  # runs once the stream's generation has stopped
        return stream.future.cancelled()

    try:
        assert asyncio.run(run())
    finally:
        hook.remove()
    assert len(forwards) < 64  # not the 512 tokens asked for


class _FakeEngine:
    """Puts the prompt and one token into the streamer, then fails (or waits for `release`)."""

    def __init__(self, tokenizer, fail: bool):
        self.tokenizer, self.fail, self.release = tokenizer, fail, threading.Event()

    def complete(self, prompts, adapters, max_new, batch_size, min_new_tokens=0, streamer=None):
        if streamer is None:
            self.release.wait(10)
            return [Completion("ok", 1, 1) for _ in prompts]
        streamer.put(torch.tensor([[1, 2]]))
        streamer.put(torch.tensor([self.tokenizer.encode(" Hello")]))
        raise RuntimeError("out of memory")


def test_full_queue_refuses_a_stream_before_any_text(tiny_base):
    async def run():
        eng = _FakeEngine(load_tokenizer(tiny_base), fail=False)
        b = MicroBatcher(eng, max_queue=1)
        running = asyncio.ensure_future(b.complete([[]], [BASE], 4))
        await asyncio.sleep(0.1)  # generating: the queue is empty again
        queued = asyncio.ensure_future(b.complete([[]], [BASE], 4))
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailable, match="queue full"):
            b.stream([], BASE, 4)
        eng.release.set()
        await asyncio.gather(running, queued)

    asyncio.run(run())


def test_failure_midway_ends_the_stream_with_the_error(tiny_base):
    async def run():
        b = MicroBatcher(_FakeEngine(load_tokenizer(tiny_base), fail=True))
        got = []
        with pytest.raises(RuntimeError, match="out of memory"):
            async for d in b.stream([], BASE, 4).deltas():
                got.append(d)
        return got

    assert asyncio.run(asyncio.wait_for(run(), 10)) == ["Hello"]
