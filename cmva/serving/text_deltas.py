"""Text deltas of a streamed answer stripped as a whole answer is (`Engine.complete` strips its text): for cmva's own
streams (cmva.serving.streaming) and a predictor's chat stream read by the transformer (vLLM's answers begin with
their first token's space: cmva.serving.aggregator_stream). No heavy imports: the transformer process uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def stripped(deltas: AsyncIterator[str]) -> AsyncIterator[str]:
    """The deltas of `text.strip()` for the text `deltas` add up to: leading whitespace dropped, trailing
    whitespace held back until more text follows it.

    Example:
        >>> import asyncio
        >>> async def parts():
        ...     for p in ["  ", " Hi", " there ", " ", "\\n"]:
        ...         yield p
        >>> async def join():
        ...     return [d async for d in stripped(parts())]
        >>> asyncio.run(join())
        ['Hi', ' there']
    """
    started, held = False, ""
    async for d in deltas:
        if not started:
            d = d.lstrip()
            started = bool(d)
        text = held + d
        body = text.rstrip()
        held = text[len(body) :]
        if body:
            yield body
