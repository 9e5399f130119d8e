"""Mixed-adapter LoRA batches in two matmuls per layer, whatever the number of adapters in the batch.

peft's mixed-batch path (`generate(adapter_names=[...])`) loops over the adapters of a batch in every LoRA
layer: gather the rows, two small matmuls, scatter back. With the five agents in one batch that is ~40 small
ops per layer and decode step; on CPU that overhead, not the arithmetic, set the packed chain's latency.

Here every layer keeps its adapters' factors concatenated along the rank, A_cat [R, in] and B_cat^T [R, out]
(R = Σ r_a), and a batch is computed as

    y = base(x) + ((x @ A_catᵀ) ⊙ M) @ B_catᵀ,    M[row, block_a] = scaling_a if row uses adapter a else 0

which is exactly Σ_a [row uses a] · scaling_a · B_a A_a x for vanilla LoRA (dropout is off at inference).
peft's own weights become views into the concatenated tensors, so nothing is stored twice; the extra
arithmetic (R instead of r columns) is a few percent of the base layer's. Those tensors are always built as
ordinary tensors, outside inference mode, even when the first mixed batch arrives inside `torch.inference_mode()`:
peft must still be able to set `requires_grad` on them when it adds, merges or deletes adapters later (an
inference tensor refuses that).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch


class _Layer:
    def __init__(self, module, adapters: Sequence[str]):
        self.module = module
        self.blocks: dict[str, tuple[int, int, float]] = {}
        a_parts, bt_parts, pos = [], [], 0
        for name in adapters:
            if name not in module.lora_A:
                continue
            a, b = module.lora_A[name].weight.data, module.lora_B[name].weight.data
            self.blocks[name] = (pos, pos + a.shape[0], float(module.scaling[name]))
            a_parts.append(a)
            bt_parts.append(b.t())
            pos += a.shape[0]
        self.a_cat = torch.cat(a_parts, 0).contiguous()  # [R, in]
        self.bt_cat = torch.cat(bt_parts, 0).contiguous()  # [R, out]
        for name, (s, e, _) in self.blocks.items():  # peft's weights now share this memory
            module.lora_A[name].weight.data = self.a_cat[s:e]
            module.lora_B[name].weight.data = self.bt_cat[s:e].t()

    def mask(self, rows: Sequence[str]) -> torch.Tensor:
        m = torch.zeros(len(rows), self.a_cat.shape[0], dtype=self.a_cat.dtype, device=self.a_cat.device)
        for i, name in enumerate(rows):
            if name in self.blocks:
                s, e, scale = self.blocks[name]
                m[i, s:e] = scale
        return m


class MixedLora:
    """The LoRA layers of a peft model, prepared for mixed-adapter batches (see the module docstring)."""

    def __init__(self, peft_model, adapters: Sequence[str]):
        from peft.tuners.lora import Linear as LoraLinear

        self.model = peft_model
        self.adapters = list(adapters)
        # Ordinary tensors even when called inside inference mode (see the module docstring).
        with torch.inference_mode(False), torch.no_grad():
            self.layers = [
                _Layer(m, self.adapters)
                for m in peft_model.modules()
                if isinstance(m, LoraLinear) and any(a in m.lora_A for a in self.adapters)
            ]
        supported = all(
            not m.lora_variant and all(isinstance(m.lora_dropout[a], torch.nn.Identity) for a in m.lora_dropout)
            for m in (layer.module for layer in self.layers)
        )
        if not supported:
            raise ValueError(
                "MixedLora supports vanilla LoRA without dropout (DoRA and other variants: use peft's path)"
            )

    @contextmanager
    def rows(self, adapter_names: Sequence[str]):
        """Within this block the model computes each row with its own adapter (`"__base__"`: none)."""
        masks: dict[tuple, torch.Tensor] = {}
        handles = []
        for layer in self.layers:
            key = tuple(layer.blocks.items())
            if key not in masks:
                masks[key] = layer.mask(adapter_names)
            handles.append(layer.module.register_forward_hook(_hook(layer, masks[key])))
        try:
            with self.model.disable_adapter():  # peft computes the base layer only; the hooks add the LoRA terms
                yield
        finally:
            for h in handles:
                h.remove()


def _hook(layer: _Layer, mask: torch.Tensor):
    def hook(_module, inputs, output):
        x = inputs[0]
        lora = (x.to(layer.a_cat.dtype) @ layer.a_cat.t()) * mask.unsqueeze(1)  # [b, t, R]
        return output + (lora @ layer.bt_cat).to(output.dtype)

    return hook
