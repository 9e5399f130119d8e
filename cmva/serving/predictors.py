"""KServe predictors: moral agents (one adapter, or all of them packed) and the aggregator.

Agent request:      {"instances": [{"question": "...", "values": ["care", ...]}], "parameters": {...}}
Agent response:     {"predictions": [{"answers": {"care": "..."}, "scores": {"care": {"care": 0.9, ...}}}]}
Aggregator request: {"instances": [{"question": "...", "profile": {...}, "answers": {"care": "..."}}]}
Aggregator response: {"predictions": [{"answer": "..."}]}
"""

from __future__ import annotations

import logging
from pathlib import Path

import kserve
from kserve.errors import InvalidInput
from pydantic import ValidationError

from cmva.prompts import agent_messages, aggregator_messages
from cmva.serving.schemas import Parameters, error_message

log = logging.getLogger(__name__)


def resolve_artifacts(uri: str) -> Path:
    """A local run directory, or an s3:// prefix downloaded with KServe's storage handler (same S3 env)."""
    if uri.startswith("s3://"):
        from kserve_storage import Storage

        return Path(Storage.download(uri))
    p = Path(uri)
    if not p.is_dir():
        raise FileNotFoundError(f"artifacts not found: {uri}")
    return p


class SharedBackend:
    """One base model + the adapters a process serves, one reward model; shared by its kserve Models."""

    def __init__(self, artifacts: str, adapters: list[str]):
        from cmva.engine import Engine
        from cmva.rewards import RewardModel
        from cmva.serving.batcher import MicroBatcher

        root = resolve_artifacts(artifacts)
        paths = {a: root / ("aggregator" if a == "aggregator" else f"agents/{a}") for a in adapters}
        for a, p in paths.items():
            if not (p / "adapter_model.safetensors").is_file():
                raise FileNotFoundError(f"adapter {a!r}: no adapter_model.safetensors under {p} (safetensors only)")
        self.engine = Engine(root / "base", paths)
        self.batcher = MicroBatcher(self.engine)
        self.rewards = RewardModel.load(root / "rewards") if (root / "rewards").is_dir() else None


def _instances(payload) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list) or not payload["instances"]:
        raise InvalidInput("instances: expected a non-empty list")
    return payload["instances"]


def _parameters(payload) -> Parameters:
    """The request's parameters, validated by the same model as the transformer's (400 naming the field)."""
    try:
        return Parameters.model_validate(payload.get("parameters") or {})
    except ValidationError as e:
        raise InvalidInput("parameters." + error_message(e)) from None


class AgentModel(kserve.Model):
    """Moral agents: `values` has one value (topology separate) or all of them (topology packed)."""

    def __init__(self, name: str, backend: SharedBackend, values: list[str]):
        super().__init__(name)
        self.backend, self.values = backend, values
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None) -> dict:
        jobs = []
        instances, params = _instances(payload), _parameters(payload)
        for i, inst in enumerate(instances):
            q = inst.get("question") if isinstance(inst, dict) else None
            if not isinstance(q, str) or not q.strip():
                raise InvalidInput(f"instances.{i}.question: expected a non-empty string")
            wanted = inst.get("values") or self.values
            unknown = [v for v in wanted if v not in self.values]
            if unknown:
                raise InvalidInput(f"instances.{i}.values: {unknown} not served here (serving {self.values})")
            jobs += [(i, v, q) for v in wanted]
        texts = await self.backend.batcher.generate(
            [agent_messages(q) for _, _, q in jobs],
            [v for _, v, _ in jobs],
            params.max_new_tokens,
            params.min_new_tokens,
        )
        preds = [{"answers": {}, "scores": {}} for _ in instances]
        scores = self.backend.rewards.score(texts) if self.backend.rewards and params.scores else None
        for k, ((i, v, _), t) in enumerate(zip(jobs, texts, strict=True)):
            preds[i]["answers"][v] = t
            if scores:
                preds[i]["scores"][v] = {name: round(s[k], 4) for name, s in scores.items()}
        return {"predictions": preds}


class AggregatorModel(kserve.Model):
    """The contextual aggregator: (question, profile, agent answers) → one answer."""

    def __init__(self, name: str, backend: SharedBackend):
        super().__init__(name)
        self.backend = backend
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None) -> dict:
        prompts = []
        instances, params = _instances(payload), _parameters(payload)
        for i, inst in enumerate(instances):
            try:
                prompts.append(aggregator_messages(inst["question"], inst["profile"], inst.get("answers") or {}))
            except (KeyError, TypeError, AttributeError):
                raise InvalidInput(f"instances.{i}: expected question, profile and answers") from None
        texts = await self.backend.batcher.generate(
            prompts, ["aggregator"] * len(prompts), params.max_new_tokens, params.min_new_tokens
        )
        return {"predictions": [{"answer": t} for t in texts]}
