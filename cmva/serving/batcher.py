"""Batching of concurrent requests: generation jobs arriving within a short window share one
mixed-adapter `Engine.generate` call (run in a worker thread so the event loop keeps serving)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class MicroBatcher:
    """Collects (prompt, adapter) jobs for `window_s`, then generates them in one batch."""

    # 64 rows: eight concurrent chain requests are 40 agent jobs, one batch (the engine still splits a batch
    # by padded tokens, so long prompts do not make it huge).
    def __init__(self, engine, max_batch: int = 64, window_s: float = 0.01):
        self.engine, self.max_batch, self.window_s = engine, max_batch, window_s
        self._pending: list[tuple[list, str, tuple[int, int], asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def generate(
        self, prompts: Sequence[list], adapters: Sequence[str], max_new_tokens: int, min_new_tokens: int = 0
    ) -> list[str]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        futures = []
        for p, a in zip(prompts, adapters, strict=True):
            fut = loop.create_future()
            self._pending.append((p, a, (max_new_tokens, min_new_tokens), fut))
            futures.append(fut)
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.window_s)  # let concurrent requests join this batch
            self._wake.clear()
            while self._pending:
                # One call per (max_new_tokens, min_new_tokens), oldest request first.
                tokens = self._pending[0][2]
                batch = [j for j in self._pending if j[2] == tokens][: self.max_batch]
                self._pending = [j for j in self._pending if j not in batch]
                try:
                    texts = await asyncio.to_thread(
                        self.engine.generate,
                        [j[0] for j in batch],
                        [j[1] for j in batch],
                        tokens[0],
                        len(batch),
                        min_new_tokens=tokens[1],
                    )
                    for j, t in zip(batch, texts, strict=True):
                        j[3].set_result(t)
                except Exception as e:  # the callers get the error, the loop keeps serving
                    for j in batch:
                        if not j[3].done():
                            j[3].set_exception(e)
