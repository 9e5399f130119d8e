"""KServe predictors: moral agents (one adapter, or all of them packed) and the aggregator.

Agent request:      {"instances": [{"question": "...", "values": ["care", ...]}], "parameters": {...}}
Agent response:     {"predictions": [{"answers": {"care": "..."}, "scores": {"care": {"care": 0.9, ...}}}]}
Aggregator request: {"instances": [{"question": "...", "profile": {...}, "answers": {"care": "..."}}]}
Aggregator response: {"predictions": [{"answer": "...", "usage": {"prompt_tokens": n, "completion_tokens": m}}]}
Aggregator stream (`stream`, one instance): the answer's text deltas as generated (cmva.serving.stream_route).

Requests are validated with the transformer's own models (cmva.serving.schemas: 400 naming the field) and
the work budget (cmva.serving.limits). Weights load in `load()` (KServe's convention: `ready` follows it).
Generation runs in the batcher's worker thread, reward scoring in one scoring thread: the event loop keeps
answering health checks and other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import kserve

from cmva.prompts import agent_messages, aggregator_messages
from cmva.serving.limits import MAX_REQUEST_TOKENS, check_work_budget
from cmva.serving.schemas import AggregatorRequest, parse_agent_request, parse_aggregator_request

if TYPE_CHECKING:
    from cmva.engine import Completion
    from cmva.serving.streaming import GenerationStream

log = logging.getLogger(__name__)


def resolve_artifacts(uri: str) -> Path:
    """Local root of the artifacts to serve: a run directory, KServe's /mnt/models or an s3:// prefix
    (fetched with the same S3 env), every artifact verified against its `_manifest.json`.

    Raises:
        cmva.storage.StorageError: Naming a missing manifest or a file whose sha256 differs.
    """
    from cmva.storage import open_serving

    return open_serving(uri)


class SharedBackend:
    """One base model + the adapters a process serves, one reward model; shared by its kserve Models.

    Nothing is loaded until `load()`."""

    def __init__(self, artifacts: str, adapters: list[str], max_queue: int = 256, dtype: str | None = None):
        self.artifacts, self.adapters, self.max_queue = artifacts, adapters, max_queue
        # the base model's, on a CPU too (cmva.models.generation_dtype); None: the base's own (cmva.decoding)
        self.dtype = dtype
        self.engine = self.rewards = self.batcher = self.ranker = None
        self.run_id: str | None = None  # the published run the artifacts belong to (V2 model metadata `versions`)
        # One thread: the reward model's tokenizer is not safe to share between threads.
        self._scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmva-scoring")

    def load(self) -> None:
        """Load the weights once (every Model of the process calls this)."""
        from cmva.serving.batcher import MicroBatcher

        if self.engine is None:
            self.engine, self.rewards = self._load_models()
            self.batcher = MicroBatcher(self.engine, max_queue=self.max_queue)

    def _load_models(self):
        from cmva.channels import served_run
        from cmva.engine import Engine
        from cmva.rewards import RewardModel

        root = resolve_artifacts(self.artifacts)
        self.run_id = served_run(self.artifacts, root)  # refuses a channel mid-promotion or mixing two runs
        paths = {a: root / ("aggregator" if a == "aggregator" else f"agents/{a}") for a in self.adapters}
        for a, p in paths.items():
            if not (p / "adapter_model.safetensors").is_file():
                raise FileNotFoundError(f"adapter {a!r}: no adapter_model.safetensors under {p} (safetensors only)")
        rewards = RewardModel.load(root / "rewards") if (root / "rewards").is_dir() else None
        if "aggregator" in paths:  # the order the aggregator was trained to read the answers in (cmva.ranking)
            from cmva.ranking import AnswerRanker

            self.ranker = AnswerRanker.load(paths["aggregator"], root / "rewards")
        engine = Engine(root / "base", paths, dtype=self.dtype or "float32", exact_dtype=self.dtype is not None)
        log.info("generating in %s", engine.dtype)
        return engine, rewards

    async def score(self, texts: list[str]) -> dict[str, list[float]] | None:
        """Reward scores of `texts` per value, computed off the event loop (None without a reward model)."""
        if self.rewards is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._scoring, self.rewards.score, texts)

    async def order(self, profiles: list[dict], answers: list[dict]) -> list[list[str] | None]:
        """The aggregator's answer order per instance, off the event loop (None each: by weight, no ranking)."""
        if self.ranker is None:
            return [None] * len(profiles)
        return await asyncio.get_running_loop().run_in_executor(self._scoring, self.ranker.order, profiles, answers)


class _BackendModel(kserve.Model):
    """A kserve Model on a SharedBackend: not ready until `load()` has loaded the backend's weights."""

    def __init__(
        self, name: str, backend: SharedBackend, values: list[str], max_request_tokens: int = MAX_REQUEST_TOKENS
    ):
        super().__init__(name)
        self.backend, self.values, self.max_request_tokens = backend, values, max_request_tokens

    def load(self) -> bool:
        self.backend.load()
        self.ready = True
        return self.ready


class AgentModel(_BackendModel):
    """Moral agents: `values` has one value (topology separate) or all of them (topology packed)."""

    async def predict(self, payload, headers=None, response_headers=None) -> dict:
        req = parse_agent_request(payload, self.values)
        jobs = [(i, v, inst.question) for i, inst in enumerate(req.instances) for v in inst.values or self.values]
        check_work_budget(len(jobs), req.parameters.max_new_tokens, self.max_request_tokens)
        texts = await self.backend.batcher.generate(
            [agent_messages(q) for _, _, q in jobs],
            [v for _, v, _ in jobs],
            req.parameters.max_new_tokens,
            req.parameters.min_new_tokens,
        )
        scores = await self.backend.score(texts) if req.parameters.scores else None
        preds = [{"answers": {}, "scores": {}} for _ in req.instances]
        for k, ((i, v, _), t) in enumerate(zip(jobs, texts, strict=True)):
            preds[i]["answers"][v] = t
            if scores:
                preds[i]["scores"][v] = {name: round(s[k], 4) for name, s in scores.items()}
        return {"predictions": preds}


class AggregatorModel(_BackendModel):
    """The contextual aggregator: (question, profile, agent answers) → one answer; `values`: the service's."""

    async def predict(self, payload, headers=None, response_headers=None) -> dict:
        req = parse_aggregator_request(payload, self.values)
        prompts = await self._prompts(req)
        done = await self.backend.batcher.complete(
            prompts, ["aggregator"] * len(prompts), req.parameters.max_new_tokens, req.parameters.min_new_tokens
        )
        return {"predictions": [{"answer": c.text, "usage": usage(c)} for c in done]}

    async def stream(self, payload) -> GenerationStream:
        """One instance's answer, streamed as generated; bad input or a full queue raise before any text."""
        from kserve.errors import InvalidInput

        req = parse_aggregator_request(payload, self.values)
        if len(req.instances) != 1:
            raise InvalidInput(f"instances: a stream answers one instance, got {len(req.instances)}")
        (prompt,) = await self._prompts(req)
        return self.backend.batcher.stream(
            prompt, "aggregator", req.parameters.max_new_tokens, req.parameters.min_new_tokens
        )

    async def _prompts(self, req: AggregatorRequest) -> list[list[dict]]:
        """The chat prompts of a request within the work budget, the answers in the aggregator's order."""
        check_work_budget(len(req.instances), req.parameters.max_new_tokens, self.max_request_tokens)
        orders = await self.backend.order([i.profile for i in req.instances], [i.answers for i in req.instances])
        return [
            aggregator_messages(inst.question, inst.profile, inst.answers, o)
            for inst, o in zip(req.instances, orders, strict=True)
        ]


def usage(c: Completion) -> dict[str, int]:
    """The token counts a predictor answers with."""
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}
