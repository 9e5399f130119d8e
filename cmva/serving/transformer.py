"""The CMVA transformer: validate → fan out to the moral agents → aggregator predictor → response contract.

preprocess: validate (400 naming the field), call the agents with c_i > 0 concurrently (explicit timeouts,
bounded retries), build the aggregator input. predict: KServe's own forwarding to `predictor_host`.
postprocess: {"answer", "agents": {v: {"answer", "scores"}}, "skipped", "degraded", "missing"}.
A lost agent never fails the request: the answer comes from the others and is marked degraded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import httpx
import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from cmva.serving.schemas import parse_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentRoute:
    """Where some agents live: `url` + KServe model name, serving `values`."""

    url: str
    model: str
    values: tuple[str, ...]


def parse_routes(spec: str, values: list[str]) -> list[AgentRoute]:
    """`care=http://h:8101,fairness=http://h:8102` (separate) or `packed=http://h:8100` (one predictor)."""
    routes = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"agent route {item!r}: expected value=URL")
        if name == "packed":
            routes.append(AgentRoute(url.rstrip("/"), "agents", tuple(values)))
        elif name in values:
            routes.append(AgentRoute(url.rstrip("/"), name, (name,)))
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
        except json.JSONDecodeError:
            raise InvalidInput(f"inputs.profile.{i}: not a JSON object") from None
    return {"instances": instances}


class CMVATransformer(kserve.Model):
    def __init__(
        self, name: str, values: list[str], routes: list[AgentRoute], timeout_s: float = 120.0, retries: int = 1
    ):
        super().__init__(name)
        self.values, self.routes, self.retries = values, routes, retries
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._client: httpx.AsyncClient | None = None
        self.ready = True

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def _call_agent(self, route: AgentRoute, body: dict) -> dict | None:
        """POST with bounded retries; None when the agent is down, times out or errors."""
        url = f"{route.url}/v1/models/{route.model}:predict"
        for attempt in range(self.retries + 1):
            try:
                r = await self.client.post(url, json=body)
                if r.status_code < 500:
                    r.raise_for_status()
                    return r.json()
                log.warning("agent %s answered %s (attempt %d)", url, r.status_code, attempt + 1)
            except (httpx.TransportError, httpx.HTTPStatusError) as e:
                log.warning("agent %s failed: %s (attempt %d)", url, e, attempt + 1)
            if attempt < self.retries:
                await asyncio.sleep(0.2 * 2**attempt)
        return None

    async def preprocess(self, payload, headers=None):
        v2 = isinstance(payload, InferRequest)
        req = parse_request(v2_to_v1(payload) if v2 else payload, self.values)
        needed = [[v for v, w in inst.profile.items() if w > 0] for inst in req.instances]
        calls = []
        for route in self.routes:
            idx = [i for i, vs in enumerate(needed) if set(vs) & set(route.values)]
            if idx:
                body = {
                    "instances": [
                        {"question": req.instances[i].question, "values": [v for v in needed[i] if v in route.values]}
                        for i in idx
                    ],
                    "parameters": req.parameters.model_dump(),
                }
                calls.append((route, idx, self._call_agent(route, body)))
        results = await asyncio.gather(*(c for _, _, c in calls))
        agents: list[dict] = [{} for _ in req.instances]
        for (_route, idx, _), res in zip(calls, results, strict=True):
            if res is None:
                continue
            for i, pred in zip(idx, res["predictions"], strict=True):
                for v, text in pred["answers"].items():
                    agents[i][v] = {"answer": text, "scores": pred.get("scores", {}).get(v, {})}
        instances, meta = [], []
        for i, inst in enumerate(req.instances):
            answers = {v: a["answer"] for v, a in agents[i].items()}
            instances.append({"question": inst.question, "profile": inst.profile, "answers": answers})
            missing = [v for v in needed[i] if v not in answers]
            skipped = [v for v in self.values if v not in needed[i]]
            meta.append({"agents": agents[i], "skipped": skipped, "missing": missing, "degraded": bool(missing)})
        return {
            "instances": instances,
            "parameters": req.parameters.model_dump(exclude={"scores"}),
            "cmva": {"v2": v2, "meta": meta},
        }

    async def predict(self, payload, headers=None, response_headers=None):
        cmva = payload.pop("cmva")
        response = await super().predict(payload, headers, response_headers)  # → aggregator predictor
        return {"predictions": response["predictions"], "cmva": cmva}

    async def postprocess(self, result, headers=None, response_headers=None):
        preds = [
            {"answer": p["answer"], **m} for p, m in zip(result["predictions"], result["cmva"]["meta"], strict=True)
        ]
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
