"""The transformer's calls in the OpenAI protocol (`--predictor_api openai`): chat completions, the adapter named
by `model`, to cmva's own predictors (cmva.serving.chat_route) or to KServe's Hugging Face runtime with vLLM.

Agents: one request per (instance, value), all concurrent, under the same failure policy as the V1 calls
(cmva.serving.call_policy). The aggregator: one request per instance; unreachable or 5xx → 503, 4xx → 502,
as KServe's own forwarding in V1 mode.
"""

from __future__ import annotations

import asyncio

import httpx
from pydantic import ValidationError

from cmva.prompts import agent_messages
from cmva.serving.agent_calls import AgentRoute
from cmva.serving.aggregator_stream import aggregator_error, token_counts
from cmva.serving.call_policy import Failure, post, with_retries
from cmva.serving.errors import BadGateway, ServiceUnavailable
from cmva.serving.schemas import PredictRequest


def chat_body(model: str, messages: list[dict], parameters: dict) -> dict:
    """Greedy decoding (temperature 0), `parameters` as the V1 ones (max_new_tokens, min_new_tokens)."""
    body = {"model": model, "messages": messages, "max_tokens": parameters["max_new_tokens"], "temperature": 0}
    if parameters.get("min_new_tokens"):
        body["min_tokens"] = parameters["min_new_tokens"]  # vLLM's extra sampling parameter, cmva's too
    return body


def completion_of(content: bytes) -> dict:
    """{"answer", "usage"} of a ChatCompletion body, the answer stripped as cmva's engine strips its own (vLLM's
    begins with its first token's space), so the aggregator reads the agents' answers alike from either predictor;
    ValueError when it is not one with a text answer."""
    from openai.types.chat import ChatCompletion

    try:
        c = ChatCompletion.model_validate_json(content)
    except ValidationError as e:
        raise ValueError(str(e).splitlines()[0]) from None
    if not c.choices or not isinstance(c.choices[0].message.content, str):
        raise ValueError("no choice with a text answer")
    return {"answer": c.choices[0].message.content.strip(), "usage": token_counts(c.usage)}


async def ask_agents(
    client: httpx.AsyncClient, routes: list[AgentRoute], req: PredictRequest, needed: list[list[str]], retries: int
) -> list[dict]:
    """Per instance {value: {"answer", "scores": {}}} from the agents that answered (no reward scores here)."""
    where = {v: r for r in routes for v in r.values}
    params = req.parameters.model_dump()
    jobs = [(i, v) for i, vs in enumerate(needed) for v in vs]
    texts = await asyncio.gather(
        *(_ask_agent(client, where[v], v, req.instances[i].question, params, retries) for i, v in jobs)
    )
    agents: list[dict] = [{} for _ in req.instances]
    for (i, v), text in zip(jobs, texts, strict=True):
        if text is not None:
            agents[i][v] = {"answer": text, "scores": {}}
    return agents


async def _ask_agent(client, route: AgentRoute, value: str, question: str, params: dict, retries: int) -> str | None:
    body = chat_body(value, agent_messages(question), params)

    async def attempt() -> str:
        r = await post(client, route.chat_url, body)
        try:
            return completion_of(r.content)["answer"]
        except ValueError as e:
            raise Failure("malformed", False, str(e)) from None

    return await with_retries(attempt, value, route.chat_url, [value], retries)


async def ask_aggregator(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """The aggregator's {"answer", "usage"}; 503 when it is down, 502 when it refused or answered garbage."""
    try:
        r = await client.post(url, json=body)
    except httpx.TransportError as e:
        raise ServiceUnavailable(f"aggregator predictor {url} unreachable: {e!r}") from None
    if r.status_code >= 400:
        raise aggregator_error(r.status_code, r.text[:300])
    try:
        return completion_of(r.content)
    except ValueError as e:
        raise BadGateway(f"aggregator predictor answered a malformed body: {e}") from None
