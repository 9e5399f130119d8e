"""Bodies that Python's json reads but strict JSON refuses (NaN, Infinity, -Infinity) get a 400 naming the field.

KServe parses request bodies with orjson, which refuses these literals with "Unrecognized request format: no digit
after sign: line 1 column 149": a position, not the field. Clients built on Python's `json.dumps` send them
(`float("inf")` serialises as `Infinity`), so the transformer answers instead, before KServe parses:

    400 {"error": "instances.0.profile.loyalty: -Infinity is not a JSON number (finite numbers only)"}

Any other body goes through untouched (the body is buffered once and replayed to the app).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import orjson

MAX_NAMED = 5


def non_finite_paths(obj, path: tuple = ()) -> Iterator[tuple[str, float]]:
    """Dotted paths of the NaN / ±Infinity numbers in a parsed JSON value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        yield ".".join(map(str, path)) or "body", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from non_finite_paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from non_finite_paths(v, (*path, i))


def non_json_numbers(body: bytes) -> str | None:
    """The error message for a body refused by strict JSON only for NaN / ±Infinity; None for any other body."""
    if not body:
        return None
    try:
        orjson.loads(body)
        return None
    except orjson.JSONDecodeError:
        pass
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # not JSON at all: KServe's own message
    found = list(non_finite_paths(obj))
    if not found:
        return None
    names = [f"{p}: {_literal(v)} is not a JSON number (finite numbers only)" for p, v in found[:MAX_NAMED]]
    return "; ".join(names) + (f"; and {len(found) - MAX_NAMED} more" if len(found) > MAX_NAMED else "")


def _literal(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


class StrictJsonNumbers:
    """ASGI middleware: a POST body with NaN/±Infinity gets a 400 naming the fields; others pass through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        error = non_json_numbers(body)
        if error:
            from starlette.responses import JSONResponse

            await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
