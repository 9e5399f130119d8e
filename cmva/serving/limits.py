"""Per-request limits of every model server, enforced before any work is queued.

- body size: FastAPI's own limit (`app.max_body_size`, Starlette's RequestBodyLimitMiddleware outside every
  other middleware): a declared Content-Length over it is refused with 413 before a byte of the body is
  read, a chunked body as soon as it passes the limit;
- work: instances × answers per instance × max_new_tokens, the tokens a request may make the server
  generate; over the budget → 400 naming `parameters.max_new_tokens`.
"""

from __future__ import annotations

# A full transformer request (16 instances, 2000-character questions) is ~40 kB; an aggregator request
# carries five 512-token answers per instance, ~250 kB.
MAX_BODY_BYTES = 1 << 20
# 16 instances × 5 agents × 64 tokens (+ the aggregator's 16 × 64) fit; 16 × 5 × 512 does not.
MAX_REQUEST_TOKENS = 16384


def limit_body_size(app, max_bytes: int = MAX_BODY_BYTES) -> None:
    """Set FastAPI's request-body limit on `app` (before it serves its first request)."""
    app.max_body_size = max_bytes


def check_work_budget(answers: int, max_new_tokens: int, limit: int = MAX_REQUEST_TOKENS) -> None:
    """Raise InvalidInput (400) when `answers` × `max_new_tokens` exceeds `limit` tokens."""
    from kserve.errors import InvalidInput

    if answers * max_new_tokens > limit:
        raise InvalidInput(
            f"parameters.max_new_tokens: this request needs {answers} answers × {max_new_tokens} tokens = "
            f"{answers * max_new_tokens} tokens, over this server's budget of {limit} tokens per request "
            "(--max_request_tokens); send fewer instances or values, or a lower max_new_tokens"
        )
