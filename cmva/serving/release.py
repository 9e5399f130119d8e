"""Which published run a server serves: KServe's V2 model metadata with `versions: [<run id>]`.

`GET /v2/models/<name>` on a predictor lists the run id of the artifacts it loaded (the release record of the
channel or run prefix it serves, `cmva.channels.served_run`); on the transformer, the run ids its predictors
report (more than one only while a rollout replaces them). Everything else of the answer is KServe's.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import httpx

Versions = Callable[[], Awaitable[list[str]]]


def add_metadata_routes(app, models: list, versions: Versions) -> None:
    """Register `GET /v2/models/<name>` for each model before KServe's own route (first match wins)."""
    for model in models:
        _add_route(app, model, versions)


def _add_route(app, model, versions: Versions) -> None:
    async def model_metadata() -> dict:
        async def types(fn):
            out = fn()
            return await out if inspect.isawaitable(out) else out

        return {
            "name": model.name,
            "versions": await versions(),
            "platform": "",
            "inputs": await types(model.get_input_types),
            "outputs": await types(model.get_output_types),
        }

    app.add_api_route(f"/v2/models/{model.name}", model_metadata, methods=["GET"])


def backend_versions(backend) -> Versions:
    """The run id a predictor's loaded artifacts belong to (`SharedBackend.run_id`), if they have a record."""

    async def versions() -> list[str]:
        run_id = getattr(backend, "run_id", None)
        return [run_id] if run_id else []

    return versions


def chain_versions(transformer, timeout_s: float = 5.0) -> Versions:
    """The run ids the transformer's predictors report (aggregator and agents), deduplicated, in order."""

    async def versions() -> list[str]:
        urls = [f"{transformer.predictor_config.predictor_base_url}/v2/models/{transformer.name}"]
        urls += [f"{r.url}/v2/models/{r.model}" for r in transformer.routes]
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            answers = await asyncio.gather(*(client.get(u) for u in urls), return_exceptions=True)
        out: list[str] = []
        for a in answers:
            if isinstance(a, httpx.Response) and a.status_code == 200:
                out += [v for v in a.json().get("versions") or [] if v not in out]
        return out

    return versions
