"""Readiness of the transformer follows its predictors (KServe's own predictor check covers only the
aggregator, and only if enabled).

`PredictorProbe` asks every predictor the transformer needs (`GET /v1/models/<name>`, ready once its weights
are loaded). Until all of them have been ready once, the transformer is not ready: no request is let in
while an agent is still loading. After that it is ready while the aggregator and at least one agent are: a
lost agent degrades answers (marked so), it does not take the whole chain out of its Service.

`ChainDataPlane` puts that behind KServe's readiness routes (`/v2/health/ready`, `/v1/models/<m>`,
`/v2/models/<m>/ready`); the predict path keeps asking only the model itself, so degraded answers still flow.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from kserve.protocol.dataplane import DataPlane

log = logging.getLogger(__name__)


class PredictorProbe:
    """Readiness of one aggregator and several agent predictors, cached for `ttl_s`."""

    def __init__(self, aggregator_url: str, agent_urls: list[str], ttl_s: float = 1.0, timeout_s: float = 2.0):
        self.aggregator_url, self.agent_urls, self.ttl_s = aggregator_url, agent_urls, ttl_s
        self.timeout = httpx.Timeout(timeout_s)
        self._all_seen_ready = False
        self._checked_at, self._ready = 0.0, False
        self._lock: asyncio.Lock | None = None

    async def ready(self) -> bool:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:  # concurrent probes share one round of requests
            if time.monotonic() - self._checked_at > self.ttl_s:
                self._ready = await self._check()
                self._checked_at = time.monotonic()
            return self._ready

    async def _check(self) -> bool:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            states = await asyncio.gather(*(_model_ready(client, u) for u in [self.aggregator_url, *self.agent_urls]))
        aggregator, agents = states[0], states[1:]
        self._all_seen_ready = self._all_seen_ready or (aggregator and all(agents))
        return self._all_seen_ready and aggregator and any(agents)


async def _model_ready(client: httpx.AsyncClient, url: str) -> bool:
    """200 with {"ready": true} (KServe's routes), or 200 with an empty body (vLLM's own `/health`)."""
    try:
        r = await client.get(url)
        return r.status_code == 200 and (not r.content or r.json().get("ready") is True)
    except (httpx.HTTPError, ValueError) as e:
        log.debug("predictor %s not ready: %s", url, e)
        return False


class ChainDataPlane(DataPlane):
    """KServe's DataPlane whose readiness answers also ask each model's `predictors_ready()`, if it has one."""

    async def ready(self) -> bool:
        return await super().ready() and await self._predictors_ready(list(self._model_registry.get_models()))

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        if not ready or disable_predictor_health_check:  # the predict path: the model's own readiness
            return ready
        return await self._predictors_ready([model_name])

    async def _predictors_ready(self, names: list[str]) -> bool:
        for name in names:
            check = getattr(self._model_registry.get_model(name), "predictors_ready", None)
            if check is not None and not await check():
                return False
        return True
