"""The transformer's V1 calls to its agent predictors (`:predict`), under the shared failure policy
(cmva.serving.call_policy: what is retried, what degrades, what fails the request).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from cmva.serving.call_policy import Failure, post, with_retries
from cmva.serving.openai_server import KSERVE, OpenAIServer
from cmva.serving.schemas import AgentPrediction, AgentResponse


@dataclass(frozen=True)
class AgentRoute:
    """Where some agents live: `url` + KServe model name, serving `values`; in the OpenAI protocol, `server` says
    which paths that server answers on (cmva.serving.openai_server)."""

    url: str
    model: str
    values: tuple[str, ...]
    server: OpenAIServer = KSERVE

    @property
    def predict_url(self) -> str:
        return f"{self.url}/v1/models/{self.model}:predict"

    @property
    def ready_url(self) -> str:
        return f"{self.url}/v1/models/{self.model}"

    @property
    def chat_url(self) -> str:
        """OpenAI protocol: the adapter is named by the body's `model` (cmva.serving.chat_calls)."""
        return f"{self.url}{self.server.chat_path}"

    @property
    def server_ready_url(self) -> str:
        """OpenAI protocol: the server's readiness (KServe's, on cmva's predictors and on vLLM's alike, or vLLM's own)."""
        return f"{self.url}{self.server.ready_path}"


async def call_agent(
    client: httpx.AsyncClient, route: AgentRoute, body: dict, values: list[str], retries: int
) -> list[AgentPrediction] | None:
    """One prediction per instance of `body`, or None when the agent is missing (cmva.serving.call_policy)."""
    return await with_retries(lambda: _attempt(client, route, body), route.model, route.predict_url, values, retries)


async def _attempt(client: httpx.AsyncClient, route: AgentRoute, body: dict) -> list[AgentPrediction]:
    r = await post(client, route.predict_url, body)
    try:
        predictions = AgentResponse.model_validate_json(r.content).predictions
    except ValidationError as e:
        raise Failure("malformed", False, str(e).splitlines()[0]) from None
    if len(predictions) != len(body["instances"]):
        raise Failure("malformed", False, f"{len(predictions)} predictions for {len(body['instances'])} instances")
    return predictions
