"""A real cmva predictor server (AgentModel, batcher, scoring thread, KServe app as cmva sets it up) whose
engine and reward model are stand-ins with set delays, so timing tests do not depend on model speed.

python -m tests.serving.fake_predictor --http_port N [--values care,fairness] [--delay_s 1] [--score_s 0]
    [--max_queue 256] [--record FILE] [--host 127.0.0.1]

The engine (`complete`) answers "<adapter>: <question>" after `delay_s` (sleeping in the batcher's worker thread, as a
real generate would compute there) and appends "<adapter>\t<question>" to FILE for every job it generated.
Scoring sleeps `score_s` in the scoring thread.
"""

from __future__ import annotations

import sys
import time

from cmva.engine import Completion
from cmva.serving.predictors import AgentModel, SharedBackend


class FakeEngine:
    def __init__(self, delay_s: float, record: str | None):
        self.delay_s, self.record = delay_s, record

    def complete(self, prompts, adapters, max_new_tokens, batch_size, min_new_tokens=0, streamer=None):
        time.sleep(self.delay_s)
        questions = [p[-1]["content"] for p in prompts]
        if self.record:
            with open(self.record, "a") as f:
                f.writelines(f"{a}\t{q}\n" for a, q in zip(adapters, questions, strict=True))
        texts = [f"{a}: {q}" for a, q in zip(adapters, questions, strict=True)]
        return [Completion(t, len(q.split()), len(t.split())) for t, q in zip(texts, questions, strict=True)]

    @staticmethod
    def tokenizer(texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


class FakeRewards:
    def __init__(self, values: list[str], score_s: float):
        self.values, self.score_s = values, score_s

    def score(self, texts):
        time.sleep(self.score_s)  # blocks its thread, as a forward pass of the reward model would
        return {v: [0.5] * len(texts) for v in self.values}


class FakeBackend(SharedBackend):
    def __init__(self, values, max_queue, delay_s, score_s, record):
        super().__init__("unused", values, max_queue)
        self.fakes = FakeEngine(delay_s, record), FakeRewards(values, score_s)

    def _load_models(self):
        return self.fakes


def main() -> None:
    from cmva.serving.modelserver import serve
    from cmva.serving.servers import _predictor_parser, _values

    p = _predictor_parser("fake cmva agent predictor")
    p.add_argument("--delay_s", type=float, default=0.0)
    p.add_argument("--score_s", type=float, default=0.0)
    p.add_argument("--record", default=None)
    args, _ = p.parse_known_args(["--artifacts", "unused", *sys.argv[1:]])
    values = _values(args.values)
    backend = FakeBackend(values, args.max_queue, args.delay_s, args.score_s, args.record)
    model = AgentModel(values[0] if len(values) == 1 else "agents", backend, values, args.max_request_tokens)
    model.load()
    serve([model], args)


if __name__ == "__main__":
    main()
