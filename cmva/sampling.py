"""RL sampling that does not depend on how a batch is split over processes.

`generate` draws each token from one stream shared by the whole batch (`torch.multinomial` on the process's RNG),
and TRL seeds every rank apart: 2 processes would sample other completions than 1 process at the same seed, so a
data-parallel run would not reproduce a single-process one. Here each token is drawn by the Gumbel-max trick
(argmax of the warped logits plus Gumbel noise: an exact sample of the softmax) with noise keyed by
(seed, generation round, global row, token position), the global row being rank × local rows + row, which is TRL's
own layout of a generation batch over the ranks (`process_slice`). The same row then gets the same noise, hence the
same completion, in any number of processes. Without gradient accumulation the rows of one process's generation
batch are in the single-process order; with it (steps_per_generation > 1) they are laid out otherwise, and sampling
stays exact but is no longer the single-process draw.

    >>> install(model, seed=0)  # model.generate now samples row by row; greedy decoding is unchanged
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def _key(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python runs (unlike `hash`)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def gumbel(key: int, size: int) -> torch.Tensor:
    """`size` Gumbel(0, 1) draws from a generator seeded by `key`."""
    u = torch.rand(size, generator=torch.Generator().manual_seed(key), dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12))).float()


def warpers(cfg) -> list[LogitsProcessor]:
    """The sampling warpers of a GenerationConfig, in transformers' own order (temperature, top-k, top-p, min-p)."""
    out: list[LogitsProcessor] = []
    if cfg.temperature is not None and cfg.temperature != 1.0:
        out.append(TemperatureLogitsWarper(cfg.temperature))
    if cfg.top_k:
        out.append(TopKLogitsWarper(cfg.top_k))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        out.append(TopPLogitsWarper(cfg.top_p))
    if cfg.min_p is not None:
        out.append(MinPLogitsWarper(cfg.min_p))
    return out


class RowKeyedSampler(LogitsProcessor):
    """Picks each row's next token by Gumbel-max with that row's own noise; returns it as a one-hot score row.

    transformers applies its warpers after custom processors: on a one-hot row they change nothing, and the
    multinomial draw that follows can only pick the chosen token.
    """

    def __init__(self, seed: int, round_: int, row_offset: int, prompt_len: int, warps: list[LogitsProcessor]):
        self.seed, self.round, self.row_offset, self.prompt_len, self.warps = (
            seed,
            round_,
            row_offset,
            prompt_len,
            warps,
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for w in self.warps:
            scores = w(input_ids, scores)
        pos = input_ids.shape[1] - self.prompt_len
        rows, vocab = scores.shape
        noise = torch.stack([gumbel(_key(self.seed, self.round, self.row_offset + i, pos), vocab) for i in range(rows)])
        chosen = (scores.float() + noise.to(scores.device)).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen, 0.0)


class RowKeyedGenerate:
    """A model's `generate` whose sampling is row-keyed (RowKeyedSampler); each call is one generation round.

    Rounds are counted per process: every rank of a data-parallel trainer generates at the same steps.
    """

    def __init__(self, generate, default_config, seed: int):
        self.generate, self.default_config, self.seed, self.rounds = generate, default_config, seed, 0

    def __call__(self, *args, generation_config=None, logits_processor=None, **kwargs):
        from cmva.distributed import rank

        cfg = generation_config or self.default_config
        if not cfg.do_sample:
            return self.generate(
                *args, generation_config=generation_config, logits_processor=logits_processor, **kwargs
            )
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        rows, prompt_len = input_ids.shape
        sampler = RowKeyedSampler(self.seed, self.rounds, rank() * rows, prompt_len, warpers(cfg))
        self.rounds += 1
        processors = LogitsProcessorList([sampler, *(logits_processor or [])])
        return self.generate(*args, generation_config=generation_config, logits_processor=processors, **kwargs)


def install(model, seed: int) -> None:
    """Make `model.generate` (this instance only) sample row by row (see the module doc); again: restart the rounds."""
    generate = model.generate.generate if isinstance(model.generate, RowKeyedGenerate) else model.generate
    model.generate = RowKeyedGenerate(generate, model.generation_config, seed)
