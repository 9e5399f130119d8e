"""HTTP errors of the serving chain beyond KServe's own (400 InvalidInput, 404, 503 ModelNotReady):
each answers `{"error": "..."}` with its status, like KServe's handlers.

- ServiceUnavailable (503 + Retry-After): a full queue, every agent a request needs down, the aggregator down.
- BadGateway (502): a predictor refused what the transformer sent it (a contract bug, not retried).
- Forbidden (403): routes this deployment does not offer (the model repository's load/unload).
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class ChainError(RuntimeError):
    status_code = 500

    def __init__(self, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.headers = headers or {}


class ServiceUnavailable(ChainError):
    status_code = 503

    def __init__(self, reason: str, retry_after_s: int = 1):
        super().__init__(reason, {"Retry-After": str(retry_after_s)})


class BadGateway(ChainError):
    status_code = 502


class Forbidden(ChainError):
    status_code = 403


async def chain_error_handler(_request, exc: ChainError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code, headers=exc.headers)


def add_error_handlers(app) -> None:
    """Register the handler on a FastAPI/Starlette app (before it starts)."""
    app.add_exception_handler(ChainError, chain_error_handler)
