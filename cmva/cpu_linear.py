"""Generation dtype `float16-weights` (CPU only): the base model's linear layers hold float16 weights, packed for
fbgemm's float16 GEMM, and compute in float32 (`torch.ao.nn.quantized.dynamic.Linear` with dtype float16, the dynamic
quantisation of torch's own `quantize_dynamic`); the embeddings, norms and every LoRA factor stay float32.

Why: at decode time a CPU reads every weight once per token at a few rows (batch 1 to a few dozen). MKL's float32 GEMM
is slow at such shapes on the 2-core AMD EPYC this project runs on: one decode step's linear layers of SmolLM2-135M
read their weights at 6.8 GB/s at 1 row and 3.2 GB/s at 5, where fbgemm's float16 kernels took 2.9 and 1.8 × less
time (bench/linear_kernels, 2026-11-28, no AVX-512; README, "Serving (KServe)", *Precision*). Half the bytes per
weight, too. The weights are rounded to float16 (about
3 significant decimal digits), so greedy answers can differ from float32's where two tokens are near ties.

Applied after the adapters are loaded (peft wraps only `torch.nn.Linear` base layers), to every plain `nn.Linear`
of the model except the LoRA factors: the base layers inside peft's LoRA layers and the output head.
"""

from __future__ import annotations

import torch
from torch.ao.nn.quantized.dynamic import Linear as _PackedLinear

WEIGHTS_DTYPE = "float16-weights"


class Float16WeightLinear(_PackedLinear):
    """fbgemm's float16-weight linear layer, whose `weight` reads as the float32 matrix it computes with (a copy, made
    when read): peft looks at a base layer's weight for the device and dtype of adapters it adds later (a weighted
    merge), and they must stay float32."""

    @property
    def weight(self):  # torch's method of the same name returns the packed weight; only its qint8 paths call it
        return self._weight_bias()[0]

    @classmethod
    def of(cls, linear: torch.nn.Linear) -> Float16WeightLinear:
        packed = cls(linear.in_features, linear.out_features, bias_=linear.bias is not None, dtype=torch.float16)
        with torch.no_grad():
            bias = None if linear.bias is None else linear.bias.detach().float()
            packed.set_weight_bias(linear.weight.detach().float(), bias)
        return packed


def pack_float16_linears(model) -> int:
    """Replace the model's linear layers (not LoRA's `lora_A` / `lora_B`) by `Float16WeightLinear`, in place; returns
    how many. A tied output head gets its own packed copy (the input embedding stays float32)."""
    n = 0
    for parent_name, parent in list(model.named_modules()):
        if parent_name.rsplit(".", 1)[-1] in ("lora_A", "lora_B"):
            continue  # the adapters' factors stay float32 (peft adds, merges and deletes them)
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, Float16WeightLinear.of(child))
                n += 1
    _own_storage(model)
    return n


def _own_storage(model) -> None:
    """Copy the parameters left (embeddings, norms, LoRA factors) out of the checkpoint's memory map, so that the
    float32 file's pages, read once to pack, are let go with it: 400 MiB of RSS for SmolLM2-135M."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
