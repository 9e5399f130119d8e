"""The transformer's calls to its agent predictors: what is retried, what degrades, what fails the request.

- connection refused / reset, 5xx (a full queue's 503 included): retried with backoff (`retries` times),
  then the agent counts as missing and the answer is degraded;
- a read timeout: not retried (the agent may still be generating; a retry would queue the same work
  again), the agent counts as missing;
- 200 with a body that is not an agent answer for every instance sent: missing (degraded), not a 500;
- 4xx: the agent refused what the transformer validated, a contract bug no retry can fix: 502 naming it.
Every miss is counted in `cmva_agent_failures_total{value, reason}`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from cmva.serving import metrics
from cmva.serving.errors import BadGateway
from cmva.serving.schemas import AgentPrediction, AgentResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentRoute:
    """Where some agents live: `url` + KServe model name, serving `values`."""

    url: str
    model: str
    values: tuple[str, ...]

    @property
    def predict_url(self) -> str:
        return f"{self.url}/v1/models/{self.model}:predict"

    @property
    def ready_url(self) -> str:
        return f"{self.url}/v1/models/{self.model}"


class _Failure(Exception):
    """An attempt that got no answer: `reason` is the metric label, `retry` whether another attempt may help."""

    def __init__(self, reason: str, retry: bool, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.retry = reason, retry


async def call_agent(
    client: httpx.AsyncClient, route: AgentRoute, body: dict, values: list[str], retries: int
) -> list[AgentPrediction] | None:
    """One prediction per instance of `body`, or None when the agent is missing (see the module doc)."""
    for attempt in range(retries + 1):
        try:
            return await _attempt(client, route, body)
        except _Failure as e:
            failure = e
            log.warning("agent %s: %s (attempt %d)", route.predict_url, e, attempt + 1)
        if not failure.retry:
            break
        if attempt < retries:
            await asyncio.sleep(0.2 * 2**attempt)
    for v in values:
        metrics.AGENT_FAILURES.labels(value=v, reason=failure.reason).inc()
    if failure.reason == "refused":
        raise BadGateway(f"agent {route.model} ({route.predict_url}) refused the request: {failure}")
    return None


async def _attempt(client: httpx.AsyncClient, route: AgentRoute, body: dict) -> list[AgentPrediction]:
    try:
        r = await client.post(route.predict_url, json=body)
    except httpx.ConnectTimeout as e:  # never reached the agent: safe to try again
        raise _Failure("unreachable", True, repr(e)) from None
    except httpx.TimeoutException as e:  # the agent may still be generating: trying again would queue it twice
        raise _Failure("timeout", False, repr(e)) from None
    except httpx.TransportError as e:
        raise _Failure("unreachable", True, repr(e)) from None
    if r.status_code >= 500:
        raise _Failure(f"http_{r.status_code}", True, r.text[:300])
    if r.status_code >= 400:
        raise _Failure("refused", False, f"{r.status_code} {r.text[:300]}")
    try:
        predictions = AgentResponse.model_validate_json(r.content).predictions
    except ValidationError as e:
        raise _Failure("malformed", False, str(e).splitlines()[0]) from None
    if len(predictions) != len(body["instances"]):
        raise _Failure("malformed", False, f"{len(predictions)} predictions for {len(body['instances'])} instances")
    return predictions
