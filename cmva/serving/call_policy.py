"""The failure policy of the transformer's calls to an agent predictor, whatever the protocol (V1 or OpenAI).

- connection refused / reset, 5xx (a full queue's 503 included): retried with backoff (`retries` times),
  then the agent counts as missing and the answer is degraded;
- a read timeout: not retried (the agent may still be generating; a retry would queue the same work
  again), the agent counts as missing;
- 200 with a body that is not an answer to what was sent: missing (degraded), not a 500;
- 4xx: the agent refused what the transformer validated, a contract bug no retry can fix: 502 naming it.
Every miss is counted in `cmva_agent_failures_total{value, reason}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from cmva.serving import metrics
from cmva.serving.errors import BadGateway

log = logging.getLogger(__name__)

T = TypeVar("T")


class Failure(Exception):
    """An attempt that got no answer: `reason` is the metric label, `retry` whether another attempt may help."""

    def __init__(self, reason: str, retry: bool, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.retry = reason, retry


async def post(client: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    """The agent's 2xx response, or Failure classified as in the module doc."""
    try:
        r = await client.post(url, json=body)
    except httpx.ConnectTimeout as e:  # never reached the agent: safe to try again
        raise Failure("unreachable", True, repr(e)) from None
    except httpx.TimeoutException as e:  # the agent may still be generating: trying again would queue it twice
        raise Failure("timeout", False, repr(e)) from None
    except httpx.TransportError as e:
        raise Failure("unreachable", True, repr(e)) from None
    if r.status_code >= 500:
        raise Failure(f"http_{r.status_code}", True, r.text[:300])
    if r.status_code >= 400:
        raise Failure("refused", False, f"{r.status_code} {r.text[:300]}")
    return r


async def with_retries(attempt: Callable[[], Awaitable[T]], agent: str, url: str, values, retries: int) -> T | None:
    """`attempt()`'s answer, or None when the agent is missing; 502 (BadGateway) when it refused the request."""
    for n in range(retries + 1):
        try:
            return await attempt()
        except Failure as e:
            failure = e
            log.warning("agent %s: %s (attempt %d)", url, e, n + 1)
        if not failure.retry:
            break
        if n < retries:
            await asyncio.sleep(0.2 * 2**n)
    for v in values:
        metrics.AGENT_FAILURES.labels(value=v, reason=failure.reason).inc()
    if failure.reason == "refused":
        raise BadGateway(f"agent {agent} ({url}) refused the request: {failure}")
    return None
