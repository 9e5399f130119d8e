"""One base model in memory + many LoRA adapters; mixed-adapter batched generation.

Rows of one batch may each use a different adapter (peft mixed-adapter batches:
`generate(..., adapter_names=[...])`, `"__base__"` for the PT model), so the five agents, the
aggregator and the PT baseline share one forward pass. Used by evaluation, aggregator-data building
and the model servers.

Example:
    >>> eng = Engine("runs/cpu/base", {"care": "runs/cpu/agents/care"})          # doctest: +SKIP
    >>> eng.generate([agent_messages("Should I lend my brother money?")], ["care"])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from cmva.models import generation_dtype, load_causal_lm, load_dtype, load_tokenizer

log = logging.getLogger(__name__)

BASE = "__base__"
# Padded tokens per generation batch: 32 rows of ≈ 500 tokens; a 2000-token few-shot prompt goes with 7 others,
# not with 31 short ones padded to its length (measured: one such batch took minutes on 2 cores).
DEFAULT_BATCH_TOKENS = 16384


def plan_batches(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, max_tokens: int | None, new_tokens: int = 0
) -> list[list[int]]:
    """Cut `order` into consecutive batches of ≤ `batch_size` rows whose padded size, rows × (longest prompt
    + `new_tokens`), stays ≤ `max_tokens` (a row longer than that goes alone).

    Example:
        >>> plan_batches([0, 1, 2, 3], [10, 10, 10, 90], batch_size=8, max_tokens=100)
        [[0, 1, 2], [3]]
    """
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        grown = max(longest, lengths[i] + new_tokens)
        if cur and (len(cur) >= batch_size or (max_tokens and grown * (len(cur) + 1) > max_tokens)):
            batches.append(cur)
            cur, grown = [], lengths[i] + new_tokens
        cur.append(i)
        longest = grown
    if cur:
        batches.append(cur)
    return batches


@dataclass(frozen=True)
class Completion:
    """One generated answer and its token counts (the prompt as the model read it, the tokens it generated)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


def generated_tokens(row: Sequence[int], eos: set[int]) -> int:
    """Tokens a row generated: up to its first end-of-sequence token (included), the rest is padding.

    Example:
        >>> generated_tokens([5, 7, 2, 2], eos={2})
        3
    """
    return next((k + 1 for k, t in enumerate(row) if t in eos), len(row))


class Engine:
    """Base model + named LoRA adapters, generating greedy or sampled text for mixed-adapter batches."""

    # Total LoRA rank the fused mixed-adapter path may hold, in units of the largest adapter loaded at start.
    # Every row pays for all of it, R·(in + out) multiply-adds per token and layer, where peft's loop pays the
    # row's own rank plus per-adapter overhead. 8 × 16 = 128 for the cpu profile: five agents + the aggregator
    # fit (SmolLM2-135M's 576×576 projections: ≤ ~45 % extra); a batch of many rank-48 weighted merges would
    # cost several base layers, so it takes peft's path.
    FUSED_RANK_FACTOR = 8

    def __init__(
        self,
        base_path: str | Path,
        adapters: Mapping[str, str | Path] | None = None,
        dtype: str = "float32",
        exact_dtype: bool = False,
    ):
        """`dtype`: the run's `base.dtype` (float32 on a CPU, `cmva.models.load_dtype`); with `exact_dtype` it holds on
        a CPU too (`cmva.models.generation_dtype`: float32, bfloat16 or float16-weights, as a server's `--dtype`).
        Without `exact_dtype`, a CPU generates in the base's own `cpu_dtype` where it has one (cmva.decoding).
        `self.dtype`: the dtype it generates in."""
        import torch

        from cmva.cpu_linear import WEIGHTS_DTYPE, pack_float16_linears
        from cmva.decoding import load_decoding

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.decoding = load_decoding(base_path)  # the rule every answer follows (cmva.decoding), before loading
        if not exact_dtype and self.device == "cpu" and self.decoding.cpu_dtype:
            dtype, exact_dtype = self.decoding.cpu_dtype, True
        self.dtype = generation_dtype(dtype) if exact_dtype else load_dtype(dtype)
        model = load_causal_lm(base_path, dtype=dtype, exact=exact_dtype)  # a bad dtype is refused before loading
        self.tokenizer = load_tokenizer(base_path)
        model.to(self.device)
        self.adapters: list[str] = []
        if adapters:
            from peft import PeftModel

            items = list(adapters.items())
            model = PeftModel.from_pretrained(model, str(items[0][1]), adapter_name=items[0][0], is_trainable=False)
            for name, path in items[1:]:
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            self.adapters = [n for n, _ in items]
        if exact_dtype and dtype == WEIGHTS_DTYPE:
            pack_float16_linears(model)  # after the adapters: peft wraps only torch.nn.Linear base layers
        self.max_fused_rank = self.FUSED_RANK_FACTOR * max((model.peft_config[a].r for a in self.adapters), default=0)
        self.model = model.eval()
        self._mixed = None  # the fused path over the adapters in `_mixed_for` (built at the first mixed batch)
        self._mixed_for: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # generate() is not re-entrant on one model
        # Generation batches per path (single adapter, fused mixed, peft mixed, base): reported by evaluation.
        self.path_counts: Counter[str] = Counter()

    def _mixed_lora(self, batch: Sequence[str]):
        """The fused mixed-adapter path (cmva.mixed_lora) covering the adapters of `batch`, or None to use
        peft's path. The current one is kept while it covers the batch (serving converges on one set: the
        agents); it grows to the union while the total rank stays ≤ max_fused_rank, else it covers this batch
        alone; a batch whose own adapters exceed the cap (e.g. many weighted merges of rank 16 × k) goes to
        peft's path, whose cost grows with each row's rank, not with the sum over the batch.
        """
        wanted = frozenset(batch) - {BASE}
        if self._mixed is not None and wanted <= self._mixed_for:
            return self._mixed
        for cand in (wanted | self._mixed_for, wanted):
            if self._total_rank(cand) <= self.max_fused_rank:
                break
        else:
            return None
        from cmva.mixed_lora import MixedLora

        try:
            self._mixed, self._mixed_for = MixedLora(self.model, sorted(cand)), cand
        except ValueError as e:
            log.info("mixed-adapter batches use peft's path: %s", e)
            self._mixed, self._mixed_for = None, frozenset()
        return self._mixed

    def _total_rank(self, adapters) -> int:
        return sum(self.model.peft_config[a].r for a in adapters)

    def add_weighted_adapter(self, name: str, weights: Mapping[str, float]) -> str:
        """Merge agents' adapters into a new adapter with delta = Σ w_i ΔW_i (P-Soups style).

        peft's `cat` combination concatenates the LoRA factors, which is exact for LoRA (the `linear`
        combination averages A and B separately and adds cross terms B_i A_j).
        """
        names = [a for a, w in weights.items() if w > 0]
        if not names:
            return BASE
        if len(names) == 1 and weights[names[0]] == 1.0:
            return names[0]  # the merge of one adapter with weight 1 is that adapter
        if name not in self.adapters:
            self.model.add_weighted_adapter(names, [weights[a] for a in names], name, combination_type="cat")
            self.adapters.append(name)
        return name

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: Sequence[Sequence[Mapping[str, str]]], *args, **kwargs) -> list[str]:
        """Generate one completion per chat prompt, each with its own adapter (`"__base__"` = PT model): the
        texts of `complete` (same arguments)."""
        return [c.text for c in self.complete(prompts, *args, **kwargs)]

    def complete(
        self,
        prompts: Sequence[Sequence[Mapping[str, str]]],
        adapter_names: Sequence[str] | None = None,
        max_new_tokens: int = 64,
        batch_size: int = 16,
        do_sample: bool = False,
        temperature: float = 1.0,
        progress: str | None = None,
        min_new_tokens: int = 0,
        max_batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
        streamer=None,
    ) -> list[Completion]:
        """One completion per chat prompt, each with its own adapter (`"__base__"` = PT model), with its
        token counts.

        `min_new_tokens` > 0 ignores end-of-sequence before that many tokens (fixed-length benchmarks).
        `streamer`: a transformers streamer fed the tokens as they are generated (one prompt only).

        Prompts are sorted by adapter, then length, and cut into batches of at most `batch_size` rows and
        `max_batch_tokens` padded tokens (rows × (longest prompt + max_new_tokens)), so one long prompt does
        not pad a whole batch to its length; results come back in input order.
        """
        import torch
        from tqdm.auto import tqdm
        from transformers import LogitsProcessorList

        from cmva.decoding import answer_processors

        n = len(prompts)
        names = list(adapter_names) if adapter_names is not None else [BASE] * n
        if len(names) != n:
            raise ValueError(f"{n} prompts but {len(names)} adapter names")
        unknown = set(names) - set(self.adapters) - {BASE}
        if unknown:
            raise ValueError(f"unknown adapter(s) {sorted(unknown)}; loaded: {self.adapters}")
        if streamer is not None and n != 1:
            raise ValueError(f"a streamer follows one prompt, got {n}")
        texts = [self.chat_prompt(p) for p in prompts]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]] if n else []
        # Group by adapter, then length: most batches hold one adapter (plain LoRA forward, measured
        # ~1.4x faster than peft's mixed-batch path) and similar lengths (less padding).
        order = sorted(range(n), key=lambda i: (names[i], lengths[i]))
        out: list[Completion | None] = [None] * n
        eos = self.tokenizer.eos_token_id
        eos = set(eos) if isinstance(eos, list) else {eos}
        batches = plan_batches(order, lengths, batch_size, max_batch_tokens, max_new_tokens)
        for idx in tqdm(batches, desc=progress, disable=progress is None, unit="batch"):
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            kwargs = dict(
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
            if min_new_tokens:
                kwargs["min_new_tokens"] = min_new_tokens
            if processors := answer_processors(self.decoding, enc["input_ids"].shape[1]):
                kwargs["logits_processor"] = LogitsProcessorList(processors)
            if streamer is not None:
                kwargs["streamer"] = streamer
            if do_sample:
                kwargs["temperature"] = temperature
            else:  # greedy: silence the model's sampling defaults
                kwargs.update(temperature=None, top_p=None, top_k=None)
            batch_names = {names[i] for i in idx}
            with self._lock, torch.inference_mode():
                if not self.adapters or batch_names == {BASE}:
                    path = "base"
                    with self.model.disable_adapter() if self.adapters else nullcontext():
                        gen = self.model.generate(**enc, **kwargs)
                elif len(batch_names) == 1:
                    path = "single"
                    self.model.set_adapter(batch_names.pop())
                    gen = self.model.generate(**enc, **kwargs)
                elif (fused := self._mixed_lora(batch_names)) is not None:  # mixed rows: two matmuls per LoRA layer
                    path = "fused-mixed"
                    with fused.rows([names[i] for i in idx]):
                        gen = self.model.generate(**enc, **kwargs)
                else:  # peft's mixed-adapter batch (loops over the adapters in every layer)
                    path = "peft-mixed"
                    gen = self.model.generate(**enc, adapter_names=[names[i] for i in idx], **kwargs)
                self.path_counts[path] += 1
            new = gen[:, enc["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, text, row in zip(idx, decoded, new.tolist(), strict=True):
                out[i] = Completion(text.strip(), lengths[i], generated_tokens(row, eos))
        return out
