"""`POST /v1/models/<aggregator>:stream` on a predictor: one aggregator answer streamed as it is generated.

Body: an aggregator request with one instance (cmva.serving.predictors). Bad input (400 naming the field),
a full queue (503 + Retry-After) and the work budget (400) are answered before the stream starts. The
stream is newline-delimited JSON, one object a line:

    {"text": "<delta>"}                                   as many as the answer has
    {"usage": {"prompt_tokens": n, "completion_tokens": m}}  last, once the answer is complete
    {"error": "<reason>"}                                 instead of the usage line if generation failed

The deltas add up to the answer `:predict` gives (greedy decoding). A client that disconnects stops the
generation (cmva.serving.streaming).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from starlette.responses import StreamingResponse

from cmva.serving.streaming import generation_events

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/x-ndjson"


def _line(obj: dict) -> str:
    return json.dumps(obj) + "\n"


async def ndjson_lines(stream) -> AsyncIterator[str]:
    """The lines of a GenerationStream (cmva.serving.streaming), ending with its usage or its error."""
    try:
        async with aclosing(generation_events(stream)) as events:  # closed at once if the client goes
            async for event in events:
                yield _line(event)
    except Exception as e:  # the status line is sent: the error travels in the stream
        log.exception("aggregator stream failed")
        yield _line({"error": f"aggregator generation failed: {e!r}"})


def add_stream_route(app, model) -> None:
    """Register the stream route of an AggregatorModel `model`."""
    from kserve.errors import InvalidInput

    @app.post(f"/v1/models/{model.name}:stream")
    async def stream(request: Request):
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            raise InvalidInput("body: not valid JSON (or nested too deeply)") from None
        return StreamingResponse(ndjson_lines(await model.stream(body)), media_type=MEDIA_TYPE)
