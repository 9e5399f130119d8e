"""One generation streamed as it runs: text deltas from the batcher's worker thread to the event loop.

transformers' AsyncTextIteratorStreamer decodes the tokens as `generate` makes them; the deltas are stripped
as `Engine.complete` strips its answer, so their concatenation is that answer. A reader that goes away stops
the generation at its next token (`GenerationStream.close`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing

from transformers import AsyncTextIteratorStreamer

from cmva.serving.text_deltas import stripped


class GenerationStopped(RuntimeError):
    """Raised in the worker thread, inside `generate`, once the stream's reader has gone."""


class JobStreamer(AsyncTextIteratorStreamer):
    """A streamer for one prompt (skips it, and special tokens, as the engine's decoding does) that can stop
    the generation feeding it. Built on the event loop that reads it."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._stopped = threading.Event()

    def put(self, value) -> None:
        if self._stopped.is_set():
            raise GenerationStopped("the stream's reader went away")
        super().put(value)

    def stop(self) -> None:
        self._stopped.set()


class GenerationStream:
    """A generation job admitted to the batcher: `deltas()` its text as generated, then `completion()`."""

    def __init__(self, streamer: JobStreamer, future: asyncio.Future):
        self.streamer, self.future = streamer, future

    async def deltas(self) -> AsyncIterator[str]:
        """The answer's text deltas; raises the generation's error, if it failed, once its text has ended."""
        try:
            async for d in stripped(self.streamer):
                yield d
            await self.future
        finally:
            self.close()

    async def completion(self):
        """The whole answer with its token counts (cmva.engine.Completion), once generated."""
        return await self.future

    def close(self) -> None:
        """Stop the generation (if still running) and drop the job (if still queued)."""
        if not self.future.done():
            self.future.cancel()
            self.streamer.stop()


async def generation_events(stream: GenerationStream) -> AsyncIterator[dict]:
    """A stream's {"text": delta} events as generated, then {"usage": {"prompt_tokens", "completion_tokens"}};
    closing this closes the stream (and stops its generation)."""
    from cmva.serving.predictors import usage

    async with aclosing(stream.deltas()) as deltas:
        async for text in deltas:
            yield {"text": text}
    yield {"usage": usage(await stream.completion())}
