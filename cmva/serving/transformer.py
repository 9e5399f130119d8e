"""The CMVA transformer: validate → fan out to the moral agents → aggregator predictor → response contract.

preprocess: validate (400 naming the field, 400 over the work budget), call the agents with c_i > 0
concurrently (cmva.serving.agent_calls: explicit timeouts, bounded retries), build the aggregator input.
predict: KServe's own forwarding to `predictor_host`. With `chat` (`--predictor_api openai`), agents and
aggregator are asked in the OpenAI chat-completions protocol instead, the adapter named by `model`
(cmva.serving.chat_calls, cmva.serving.chat_aggregator): cmva's predictors or vLLM alike.
postprocess: {"answer", "agents": {v: {"answer", "scores"}}, "skipped", "degraded", "missing"}.
The OpenAI route (cmva.serving.openai_route) calls `answer` (one instance, with the aggregator's token counts)
or `stream` (one instance, the aggregator's answer streamed as generated: cmva.serving.aggregator_stream).
A lost agent does not fail the request: the answer comes from the others and is marked degraded. With no
agent left for an instance, or the aggregator down, the answer is 503 (Retry-After); an agent or the
aggregator refusing what was sent (4xx) is 502 naming it. Readiness follows the predictors
(cmva.serving.readiness).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from cmva.serving import chat_calls, metrics
from cmva.serving.agent_calls import AgentRoute, call_agent
from cmva.serving.aggregator_stream import aggregator_error, open_stream
from cmva.serving.errors import BadGateway, ServiceUnavailable
from cmva.serving.limits import MAX_REQUEST_TOKENS, check_work_budget
from cmva.serving.openai_server import KSERVE, OpenAIServer
from cmva.serving.readiness import PredictorProbe
from cmva.serving.schemas import PredictRequest, parse_request

if TYPE_CHECKING:
    from cmva.serving.chat_aggregator import ChatAggregator

log = logging.getLogger(__name__)

__all__ = ["AgentRoute", "CMVATransformer", "parse_routes", "v2_to_v1"]


def parse_routes(spec: str, values: list[str], server: OpenAIServer = KSERVE) -> list[AgentRoute]:
    """`care=http://h:8101,fairness=http://h:8102` (separate) or `packed=http://h:8100` (one predictor); `server`:
    the paths of the OpenAI protocol there (cmva.serving.openai_server)."""
    routes = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"agent route {item!r}: expected value=URL")
        if name == "packed":
            routes.append(AgentRoute(url.rstrip("/"), "agents", tuple(values), server))
        elif name in values:
            routes.append(AgentRoute(url.rstrip("/"), name, (name,), server))
        else:
            raise ValueError(f"agent route {item!r}: {name!r} is not one of {values}")
    served = {v for r in routes for v in r.values}
    if served != set(values):
        raise ValueError(f"no agent route for {sorted(set(values) - served)}")
    return routes


def v2_to_v1(req: InferRequest) -> dict:
    """V2 inputs `question` (BYTES [n]) and `profile` (BYTES [n], JSON objects) → a V1 body."""
    from kserve.errors import InvalidInput

    cols = {}
    for inp in req.inputs:
        cols[inp.name] = [d.decode() if isinstance(d, bytes) else d for d in inp.data]
    if "question" not in cols or "profile" not in cols:
        raise InvalidInput("inputs: expected BYTES tensors named 'question' and 'profile' (JSON)")
    if len(cols["question"]) != len(cols["profile"]):
        raise InvalidInput("inputs: 'question' and 'profile' must have the same length")
    instances = []
    for i, (q, p) in enumerate(zip(cols["question"], cols["profile"], strict=True)):
        try:
            instances.append({"question": q, "profile": json.loads(p) if isinstance(p, str) else p})
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested deeper than the decoder allows
            raise InvalidInput(f"inputs.profile.{i}: not a JSON object (or nested too deeply)") from None
    return {"instances": instances}


class CMVATransformer(kserve.Model):
    def __init__(
        self,
        name: str,
        values: list[str],
        routes: list[AgentRoute],
        timeout_s: float = 120.0,
        retries: int = 1,
        max_request_tokens: int = MAX_REQUEST_TOKENS,
        chat: ChatAggregator | None = None,
    ):
        """`chat`: ask the predictors in the OpenAI protocol, the aggregator's prompt built here (None: V1)."""
        super().__init__(name)
        self.chat = chat
        self.values, self.routes, self.retries = values, routes, retries
        self.max_request_tokens = max_request_tokens
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._client: httpx.AsyncClient | None = None
        self._probe: PredictorProbe | None = None

    def load(self) -> bool:
        """Only the aggregator's ranking in the OpenAI protocol; whether its predictors are ready is
        `predictors_ready`."""
        if self.chat is not None:
            self.chat.load()
        self.ready = True
        return self.ready

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def predictors_ready(self) -> bool:
        """Asked by the readiness routes (cmva.serving.readiness.ChainDataPlane)."""
        if self._probe is None:
            base = self.predictor_config.predictor_base_url
            if self.chat is None:
                self._probe = PredictorProbe(f"{base}/v1/models/{self.name}", [r.ready_url for r in self.routes])
            else:  # the servers' readiness: vLLM's KServe model is not named after this chain
                ready = f"{base}{self.chat.server.ready_path}"
                self._probe = PredictorProbe(ready, [r.server_ready_url for r in self.routes])
        return await self._probe.ready()

    async def preprocess(self, payload, headers=None):
        v2 = isinstance(payload, InferRequest)
        req = parse_request(v2_to_v1(payload) if v2 else payload, self.values)
        needed = [[v for v, w in inst.profile.items() if w > 0] for inst in req.instances]
        answers = sum(map(len, needed)) + len(needed)  # the agents' answers and the aggregator's
        check_work_budget(answers, req.parameters.max_new_tokens, self.max_request_tokens)
        agents = await self._ask_agents(req, needed)
        instances, meta = [], []
        for inst, need, got in zip(req.instances, needed, agents, strict=True):
            answered = {v: a["answer"] for v, a in got.items()}
            instances.append({"question": inst.question, "profile": inst.profile, "answers": answered})
            meta.append(_meta(self.values, need, got))
        _refuse_unanswerable(meta)
        metrics.DEGRADED_ANSWERS.inc(sum(m["degraded"] for m in meta))
        return {
            "instances": instances,
            "parameters": req.parameters.model_dump(exclude={"scores"}),
            "cmva": {"v2": v2, "meta": meta},
        }

    async def _ask_agents(self, req: PredictRequest, needed: list[list[str]]) -> list[dict]:
        """Per instance {value: {"answer", "scores"}} from the agents that answered."""
        if self.chat is not None:
            return await chat_calls.ask_agents(self.client, self.routes, req, needed, self.retries)
        calls = []
        for route in self.routes:
            idx = [i for i, vs in enumerate(needed) if set(vs) & set(route.values)]
            if not idx:
                continue
            wanted = [[v for v in needed[i] if v in route.values] for i in idx]
            body = {
                "instances": [
                    {"question": req.instances[i].question, "values": w} for i, w in zip(idx, wanted, strict=True)
                ],
                "parameters": req.parameters.model_dump(),
            }
            values = sorted({v for w in wanted for v in w})
            calls.append((idx, call_agent(self.client, route, body, values, self.retries)))
        results = await asyncio.gather(*(c for _, c in calls))
        agents: list[dict] = [{} for _ in req.instances]
        for (idx, _), preds in zip(calls, results, strict=True):
            for i, pred in zip(idx, preds or [], strict=False):
                for v, text in pred.answers.items():
                    if v in needed[i]:
                        agents[i][v] = {"answer": text, "scores": pred.scores.get(v, {})}
        return agents

    async def predict(self, payload, headers=None, response_headers=None):
        cmva = payload.pop("cmva")
        if self.chat is not None:
            url = f"{self.predictor_config.predictor_base_url}{self.chat.server.chat_path}"
            preds = await self.chat.answers(self.client, url, payload["instances"], payload["parameters"])
            return {"predictions": preds, "cmva": cmva}
        try:
            response = await super().predict(payload, headers, response_headers)  # → aggregator predictor
        except httpx.TransportError as e:
            host = self.predictor_config.predictor_host
            raise ServiceUnavailable(f"aggregator predictor {host} unreachable: {e!r}") from None
        except httpx.HTTPStatusError as e:
            raise aggregator_error(e.response.status_code, e.response.text) from None
        return {"predictions": _aggregator_answers(response, len(cmva["meta"])), "cmva": cmva}

    async def answer(self, v1: dict, headers=None) -> tuple[dict, dict | None]:
        """A V1 request of one instance: its prediction (as `postprocess` gives it) and the aggregator's
        token counts ({"prompt_tokens", "completion_tokens"}, None from a predictor that sends none)."""
        result = await self.predict(await self.preprocess(v1, headers), headers)
        return _predictions(result)[0], result["predictions"][0].get("usage")

    async def stream(self, v1: dict, headers=None) -> tuple[dict, AsyncIterator[dict]]:
        """A V1 request of one instance: its agents' part of the prediction (agents, skipped, missing,
        degraded), and the aggregator's answer as it is generated ({"text"} events, then {"usage"})."""
        payload = await self.preprocess(v1, headers)
        meta = payload.pop("cmva")["meta"][0]
        base = self.predictor_config.predictor_base_url
        if self.chat is not None:  # the predictor's (or vLLM's) chat-completions stream
            url = f"{base}{self.chat.server.chat_path}"
            return meta, await self.chat.stream(self.client, url, payload["instances"][0], payload["parameters"])
        return meta, await open_stream(self.client, f"{base}/v1/models/{self.name}:stream", payload)

    async def postprocess(self, result, headers=None, response_headers=None):
        preds = _predictions(result)
        if not result["cmva"]["v2"]:
            return {"predictions": preds}
        n = len(preds)
        return InferResponse(
            response_id="",
            model_name=self.name,
            infer_outputs=[
                InferOutput("answer", [n], "BYTES", [p["answer"] for p in preds]),
                InferOutput(
                    "details", [n], "BYTES", [json.dumps({k: v for k, v in p.items() if k != "answer"}) for p in preds]
                ),
            ],
        )


def _predictions(result: dict) -> list[dict]:
    """Each instance's answer with its agents' part (`_meta`)."""
    return [{"answer": p["answer"], **m} for p, m in zip(result["predictions"], result["cmva"]["meta"], strict=True)]


def _meta(values: list[str], needed: list[str], agents: dict) -> dict:
    missing = [v for v in needed if v not in agents]
    skipped = [v for v in values if v not in needed]
    return {"agents": agents, "skipped": skipped, "missing": missing, "degraded": bool(missing)}


def _refuse_unanswerable(meta: list[dict]) -> None:
    """503 when an instance asked for agents and none of them answered (nothing to aggregate)."""
    for i, m in enumerate(meta):
        if m["missing"] and not m["agents"]:
            raise ServiceUnavailable(f"instances.{i}: no agent answered (missing: {', '.join(m['missing'])})")


def _aggregator_answers(response, n: int) -> list[dict]:
    """The aggregator's predictions, one {"answer": str} per instance, or 502."""
    preds = response.get("predictions") if isinstance(response, dict) else None
    ok = isinstance(preds, list) and len(preds) == n
    if not ok or not all(isinstance(p, dict) and isinstance(p.get("answer"), str) for p in preds):
        raise BadGateway(f"aggregator predictor answered a malformed body: {str(response)[:300]}")
    return preds
