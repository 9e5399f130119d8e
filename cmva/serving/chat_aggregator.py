"""The aggregator's side of the chain in the OpenAI protocol: the transformer builds the aggregator's prompt.

A vLLM server only completes chat messages, so the order in which the aggregator reads the agents' answers
(cmva.ranking, applied by cmva's aggregator predictor in V1 mode) is applied here: `load()` fetches only the
aggregator's `ranking.json` and the reward set it names from the artifacts (`--artifacts`, the URI the
predictors get); without a `ranking.json` the answers are listed by weight, as the aggregator predictor does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from cmva.prompts import aggregator_messages
from cmva.serving.aggregator_stream import open_chat_stream
from cmva.serving.chat_calls import ask_aggregator, chat_body
from cmva.serving.openai_server import KSERVE, OpenAIServer


def load_ranker(artifacts: str):
    """The AnswerRanker saved with the served aggregator adapter, or None (no `ranking.json`: by weight)."""
    from cmva.ranking import RANKING_FILE, AnswerRanker
    from cmva.storage import open_store

    store = open_store(artifacts)
    adapter = store.get("aggregator")
    if not (adapter / RANKING_FILE).is_file():
        return None
    return AnswerRanker.load(adapter, store.get("rewards"))


class ChatAggregator:
    """Orders the answers, builds the aggregator's messages, asks `adapter` (its LoRA name on the predictor) on a
    `server` of that kind (cmva.serving.openai_server: its paths)."""

    def __init__(self, artifacts: str, adapter: str = "aggregator", server: OpenAIServer = KSERVE):
        self.artifacts, self.adapter, self.server = artifacts, adapter, server
        self.ranker = None
        # One thread: the reward model's tokenizer is not safe to share between threads.
        self._scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmva-ranking")

    def load(self) -> None:
        self.ranker = load_ranker(self.artifacts)

    async def answers(self, client: httpx.AsyncClient, url: str, instances: list[dict], parameters: dict) -> list[dict]:
        """One {"answer", "usage"} per instance ({"question", "profile", "answers"}), asked concurrently."""
        orders = await self._orders(instances)
        bodies = [self._body(i, o, parameters) for i, o in zip(instances, orders, strict=True)]
        return list(await asyncio.gather(*(ask_aggregator(client, url, b) for b in bodies)))

    async def stream(
        self, client: httpx.AsyncClient, url: str, instance: dict, parameters: dict
    ) -> AsyncIterator[dict]:
        """The answer to one instance streamed as the predictor generates it (cmva.serving.aggregator_stream)."""
        (order,) = await self._orders([instance])
        return await open_chat_stream(client, url, self._body(instance, order, parameters))

    def _body(self, instance: dict, order, parameters: dict) -> dict:
        messages = aggregator_messages(instance["question"], instance["profile"], instance["answers"], order)
        return chat_body(self.adapter, messages, parameters)

    async def _orders(self, instances: list[dict]) -> list:
        if self.ranker is None:
            return [None] * len(instances)
        profiles, answers = [i["profile"] for i in instances], [i["answers"] for i in instances]
        return await asyncio.get_running_loop().run_in_executor(self._scoring, self.ranker.order, profiles, answers)
