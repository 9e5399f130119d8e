"""Dynamic int8 quantisation of a model's linear layers for CPU generation (LoRA adapters kept in float32).

On a 2-core CPU a decode step of SmolLM2-135M in float32 reads its 513 MiB of weights through matrix-vector
products that run at ≈ 10 GB/s (75 % of the step is `aten::mm`), so generation is bound by the bytes of the
weights. `torch.ao.quantization.quantize_dynamic` stores each linear layer's weight as int8 (per-tensor scale) and
quantises the activations on the fly: a quarter of the bytes, and int8 kernels. Measured here (2026-11-26, one
decode step at batch 1): float32 57-60 ms, bfloat16 36 ms, int8 20 ms.

Only the base model's linear layers are quantised: peft's LoRA factors (`lora_A`/`lora_B`, small) stay float32 and
are still added to the quantised base layer's output (peft's path and `cmva.mixed_lora` alike). The output
projection, tied to the input embeddings in SmolLM2, is untied first so that the embedding lookup stays float32.
Answers change (greedy decoding follows other logits); whether the quality holds is measured by evaluating with
`evaluate.quantize: int8` (README, Serving). Merging adapters into a quantised base is not possible: serving
never merges (weighted merges are new adapters, not merged weights, and work).

Two properties to know: dynamic int8 scales the activations per tensor, so a row's answer depends on the rows it is
batched with (float32 rows do not); and torch.ao's quantised tensors are deprecated in favour of torchao, whose int8
configurations (`Int8WeightOnlyConfig`, `Int8DynamicActivationInt8WeightConfig`, torchao 0.18) ran slower than
float32 here without torch.compile (85 / 121 ms per decode step): torch is pinned (2.13), so torch.ao stays until
torchao's CPU path is faster.

Example:
    >>> from cmva.engine import Engine                                                    # doctest: +SKIP
    >>> eng = Engine("runs/cpu/base", {"care": "runs/cpu/agents/care"}, quantize="int8")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import warnings

QUANTIZE = ("none", "int8")


def check_quantize(quantize: str | None, device: str) -> str:
    """`quantize` as a name from QUANTIZE ("none" for None); a clear error for an unknown one or int8 on a GPU.

    Example:
        >>> check_quantize(None, "cpu"), check_quantize("int8", "cpu")
        ('none', 'int8')
    """
    q = quantize or "none"
    if q not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if q == "int8" and device != "cpu":
        raise ValueError("quantize=int8 is dynamic int8 for CPU generation; on a GPU use dtype bfloat16 (or vLLM)")
    return q


def _lora_factor_ids(model) -> set[int]:
    """ids of the LoRA factor modules (lora_A / lora_B of every adapter) of a peft model (empty for a plain one)."""
    import torch

    ids: set[int] = set()
    for module in model.modules():
        for attr in ("lora_A", "lora_B"):
            factors = getattr(module, attr, None)
            if isinstance(factors, torch.nn.ModuleDict):
                ids.update(id(m) for m in factors.values())
    return ids


@functools.cache
def _int8_linear_class():
    """torch's dynamic int8 Linear, as peft can wrap it: peft reads a base layer's `weight` for the device and dtype
    of a new adapter (a weighted merge is added after loading) and would find torch's `weight()` method; it falls
    back to `qweight`, a tensor here."""
    import torch

    class Int8Linear(torch.ao.nn.quantized.dynamic.Linear):
        weight = None  # torch's weight() is not a tensor; nothing in the forward pass calls it

        @property
        def qweight(self):
            return self._weight_bias()[0]

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, dtype=qint8"

    return Int8Linear


def quantize_int8(model) -> int:
    """Replace, in place, every base linear layer of `model` (plain or peft) by a dynamic int8 one; returns how many.

    The output embeddings are untied from the input embeddings first (their own copy, then quantised).
    """
    import torch

    factors = _lora_factor_ids(model)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None  # a transformers model
    if out is not None and out.weight is model.get_input_embeddings().weight:
        out.weight = torch.nn.Parameter(out.weight.detach().clone(), requires_grad=False)
    spec = {
        name: torch.ao.quantization.default_dynamic_qconfig
        for name, m in model.named_modules()
        if type(m) is torch.nn.Linear and id(m) not in factors
    }
    mapping = {torch.nn.Linear: _int8_linear_class()}
    with warnings.catch_warnings():  # torch.ao's quantised tensors are deprecated for torchao (module docstring)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, mapping=mapping, inplace=True)
    return len(spec)


def weight_bytes(model) -> int:
    """Bytes of a model's weights as held: its parameters plus the int8 weights (and float biases) of quantised
    linear layers, which are packed buffers, not parameters.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> weight_bytes(m), (quantize_int8(m), weight_bytes(m))[1]
        (232, 88)
    """
    import torch

    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            w, b = m._weight_bias()
            total += w.numel() * w.element_size() + (0 if b is None else b.numel() * b.element_size())
    return total
