"""Batching of concurrent requests: generation jobs arriving within a short window share one
mixed-adapter `Engine.generate` call (run in a worker thread so the event loop keeps serving).

The queue is bounded: a request whose jobs do not fit gets 503 with Retry-After (backpressure instead of an
ever longer wait). A caller that goes away (client disconnect, timeout: its future is cancelled) loses only its
own jobs: those still queued are dropped before generation, results of a running batch skip it.
A streamed job (`stream`) is a batch of its own, its tokens decoded as they come (cmva.serving.streaming);
its reader going away stops its generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from cmva.engine import Completion
from cmva.serving import metrics
from cmva.serving.errors import ServiceUnavailable
from cmva.serving.streaming import GenerationStream, JobStreamer


@dataclass(eq=False)
class _Job:
    prompt: list
    adapter: str
    tokens: tuple[int, int]  # (max_new_tokens, min_new_tokens): one engine call per pair
    future: asyncio.Future = field(repr=False)
    streamer: JobStreamer | None = field(default=None, repr=False)


class MicroBatcher:
    """Collects (prompt, adapter) jobs for `window_s`, then generates them in one batch."""

    # 64 rows: eight concurrent chain requests are 40 agent jobs, one batch (the engine still splits a batch
    # by padded tokens, so long prompts do not make it huge). 256 queued jobs: about 50 chain requests waiting.
    def __init__(self, engine, max_batch: int = 64, window_s: float = 0.01, max_queue: int = 256):
        self.engine, self.max_batch, self.window_s, self.max_queue = engine, max_batch, window_s, max_queue
        self._pending: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def generate(
        self, prompts: Sequence[list], adapters: Sequence[str], max_new_tokens: int, min_new_tokens: int = 0
    ) -> list[str]:
        """The answers' texts, in order."""
        return [c.text for c in await self.complete(prompts, adapters, max_new_tokens, min_new_tokens)]

    async def complete(
        self, prompts: Sequence[list], adapters: Sequence[str], max_new_tokens: int, min_new_tokens: int = 0
    ) -> list[Completion]:
        """The answers with their token counts, in order."""
        jobs = self._submit(prompts, adapters, (max_new_tokens, min_new_tokens))
        # Cancelling this caller cancels its futures (gather does): the loop then skips its jobs.
        return list(await asyncio.gather(*(j.future for j in jobs)))

    def stream(self, prompt: list, adapter: str, max_new_tokens: int, min_new_tokens: int = 0) -> GenerationStream:
        """One answer streamed as generated; a full queue raises ServiceUnavailable here, before any text."""
        streamer = JobStreamer(self.engine.tokenizer)
        (job,) = self._submit([prompt], [adapter], (max_new_tokens, min_new_tokens), streamer)
        return GenerationStream(streamer, job.future)

    def _submit(self, prompts, adapters, tokens: tuple[int, int], streamer: JobStreamer | None = None) -> list[_Job]:
        """Queue the jobs (or refuse them all with 503) and wake the loop."""
        self._ensure_running()
        self._admit(len(prompts))
        loop = asyncio.get_running_loop()
        jobs = [_Job(p, a, tokens, loop.create_future(), streamer) for p, a in zip(prompts, adapters, strict=True)]
        self._pending += jobs
        metrics.QUEUE_DEPTH.set(len(self._pending))
        self._wake.set()
        return jobs

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _admit(self, n: int) -> None:
        waiting = sum(not j.future.done() for j in self._pending)
        if waiting + n > self.max_queue:
            metrics.REJECTED.inc(n)
            raise ServiceUnavailable(
                f"generation queue full: {waiting} jobs waiting, this request adds {n}, the limit is "
                f"{self.max_queue} (--max_queue); retry later"
            )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.window_s)  # let concurrent requests join this batch
            self._wake.clear()
            while batch := self._next_batch():
                await self._run_batch(batch)

    def _next_batch(self) -> list[_Job]:
        """The oldest live job's (max, min) tokens, up to max_batch jobs, or that job alone if it streams;
        jobs of callers gone are dropped."""
        self._pending = [j for j in self._pending if not j.future.done()]
        if not self._pending:
            metrics.QUEUE_DEPTH.set(0)
            return []
        first = self._pending[0]
        same = [j for j in self._pending if j.tokens == first.tokens and j.streamer is None]
        batch = [first] if first.streamer is not None else same[: self.max_batch]
        taken = set(map(id, batch))
        self._pending = [j for j in self._pending if id(j) not in taken]
        metrics.QUEUE_DEPTH.set(len(self._pending))
        return batch

    async def _run_batch(self, batch: list[_Job]) -> None:
        try:
            done = await asyncio.to_thread(self._generate, batch)
        except Exception as e:  # the batch's callers get the error, the loop keeps serving
            for j in batch:
                if j.streamer is not None:  # generate did not end its stream
                    j.streamer.end()
                if not j.future.done():
                    j.future.set_exception(e)
            return
        for j, c in zip(batch, done, strict=True):
            if not j.future.done():  # its caller went away meanwhile
                j.future.set_result(c)

    def _generate(self, batch: list[_Job]) -> list[Completion]:
        """In a worker thread: one engine call, and the tokens it generated counted per adapter."""
        max_new, min_new = batch[0].tokens
        done = self.engine.complete(
            [j.prompt for j in batch],
            [j.adapter for j in batch],
            max_new,
            len(batch),
            min_new_tokens=min_new,
            streamer=batch[0].streamer,
        )
        ids = self.engine.tokenizer([c.text for c in done], add_special_tokens=False)["input_ids"]
        for j, tokens in zip(batch, ids, strict=True):
            metrics.GENERATED_TOKENS.labels(adapter=j.adapter).inc(len(tokens))
        return done
