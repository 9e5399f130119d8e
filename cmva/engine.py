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
from collections.abc import Mapping, Sequence
from pathlib import Path

from cmva.models import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)

BASE = "__base__"


class Engine:
    """Base model + named LoRA adapters, generating greedy or sampled text for mixed-adapter batches."""

    def __init__(self, base_path: str | Path, adapters: Mapping[str, str | Path] | None = None, dtype: str = "float32"):
        import torch

        self.tokenizer = load_tokenizer(base_path)
        model = load_causal_lm(base_path, dtype=dtype)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(self.device)
        self.adapters: list[str] = []
        if adapters:
            from peft import PeftModel

            items = list(adapters.items())
            model = PeftModel.from_pretrained(model, str(items[0][1]), adapter_name=items[0][0], is_trainable=False)
            for name, path in items[1:]:
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            self.adapters = [n for n, _ in items]
        self.model = model.eval()
        self._lock = threading.Lock()  # generate() is not re-entrant on one model

    def add_weighted_adapter(self, name: str, weights: Mapping[str, float]) -> str:
        """Merge agents' adapters into a new adapter with delta = Σ w_i ΔW_i (P-Soups style).

        peft's `cat` combination concatenates the LoRA factors, which is exact for LoRA (the `linear`
        combination averages A and B separately and adds cross terms B_i A_j).
        """
        names = [a for a, w in weights.items() if w > 0]
        if not names:
            return BASE
        if name not in self.adapters:
            self.model.add_weighted_adapter(names, [weights[a] for a in names], name, combination_type="cat")
            self.adapters.append(name)
        return name

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def generate(
        self,
        prompts: Sequence[Sequence[Mapping[str, str]]],
        adapter_names: Sequence[str] | None = None,
        max_new_tokens: int = 64,
        batch_size: int = 16,
        do_sample: bool = False,
        temperature: float = 1.0,
        progress: str | None = None,
        min_new_tokens: int = 0,
    ) -> list[str]:
        """Generate one completion per chat prompt, each with its own adapter (`"__base__"` = PT model).

        `min_new_tokens` > 0 ignores end-of-sequence before that many tokens (fixed-length benchmarks).

        Prompts are sorted by length so that batches hold similar lengths (less padding); results come
        back in input order.
        """
        import torch
        from tqdm.auto import tqdm

        n = len(prompts)
        names = list(adapter_names) if adapter_names is not None else [BASE] * n
        if len(names) != n:
            raise ValueError(f"{n} prompts but {len(names)} adapter names")
        unknown = set(names) - set(self.adapters) - {BASE}
        if unknown:
            raise ValueError(f"unknown adapter(s) {sorted(unknown)}; loaded: {self.adapters}")
        texts = [self.chat_prompt(p) for p in prompts]
        # Group by adapter, then length: most batches hold one adapter (plain LoRA forward, measured
        # ~1.4x faster than peft's mixed-batch path) and similar lengths (less padding).
        order = sorted(range(n), key=lambda i: (names[i], len(texts[i])))
        out: list[str] = [""] * n
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
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
            if do_sample:
                kwargs["temperature"] = temperature
            else:  # greedy: silence the model's sampling defaults
                kwargs.update(temperature=None, top_p=None, top_k=None)
            batch_names = {names[i] for i in idx}
            with self._lock, torch.inference_mode():
                if not self.adapters:
                    gen = self.model.generate(**enc, **kwargs)
                elif batch_names == {BASE}:
                    with self.model.disable_adapter():
                        gen = self.model.generate(**enc, **kwargs)
                elif len(batch_names) == 1:
                    self.model.set_adapter(batch_names.pop())
                    gen = self.model.generate(**enc, **kwargs)
                else:  # rows with different adapters: one peft mixed-adapter batch
                    gen = self.model.generate(**enc, adapter_names=[names[i] for i in idx], **kwargs)
            new = gen[:, enc["input_ids"].shape[1] :]
            for i, text in zip(idx, self.tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
        return out
