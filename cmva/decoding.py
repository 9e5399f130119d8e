"""The decoding rule a base model's answers follow, saved beside its weights (`decoding.json`).

`cpu_dtype`: the dtype answers are generated in on a CPU when nobody asks for another (`evaluate.dtype`, a server's
`--dtype`); None: float32. `float16-weights` (cmva.cpu_linear) generates about 1.5 × faster on the CPUs this
project runs on; recorded with the base, it is the same for the evaluation, the aggregator's data and the servers.
A GPU ignores it (there the run's `base.dtype` holds).

`no_repeat_ngram_size` n > 0: an answer never repeats one of its own n-token sequences. RL against a value
classifier buys reward with answers that loop ("it seems like a reasonable request, it seems like a reasonable
request…"), and greedy decoding shows it; this rule stops the loop where it starts. Unlike transformers'
`no_repeat_ngram_size`, the prompt does not count: the aggregator may still copy the agents' answers it reads,
and an agent may repeat the question's words.

Every generation of `cmva.engine.Engine` follows the rule of the base it loads (evaluation, the aggregator's
training data, the model servers), so what is evaluated is what is served. A base without the file has no rule.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> save_decoding(d, Decoding(no_repeat_ngram_size=4))
    >>> load_decoding(d).no_repeat_ngram_size
    4
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cmva.config import GenerationDtype

DECODING_FILE = "decoding.json"


class Decoding(BaseModel):
    """The decoding rule of a base model's answers (see the module doc)."""

    model_config = ConfigDict(extra="forbid")

    no_repeat_ngram_size: int = Field(0, ge=0)  # 0: off
    cpu_dtype: GenerationDtype | None = None  # None: float32 (see the module doc)


def save_decoding(base_dir: str | Path, decoding: Decoding) -> None:
    """Write `decoding` beside the base model in `base_dir` (nothing when it has no rule)."""
    if decoding != Decoding():
        (Path(base_dir) / DECODING_FILE).write_text(decoding.model_dump_json(indent=2) + "\n")


def load_decoding(base_dir: str | Path) -> Decoding:
    """The rule saved with the base model in `base_dir` (no rule when there is no file); a malformed file is an
    error naming it, not a silent default."""
    path = Path(base_dir) / DECODING_FILE
    if not path.is_file():
        return Decoding()
    try:
        return Decoding.model_validate(json.loads(path.read_text()))
    except ValueError as e:  # not JSON, or not a rule (pydantic's ValidationError is a ValueError)
        raise ValueError(f"{path}: not a valid decoding rule: {e}") from e


def answer_processors(decoding: Decoding, prompt_len: int) -> list:
    """The logits processors that enforce `decoding` on answers generated after `prompt_len` prompt tokens
    (left-padded batches: one prompt length per batch)."""
    if not decoding.no_repeat_ngram_size:
        return []
    return [answer_no_repeat_class()(decoding.no_repeat_ngram_size, prompt_len)]


@functools.cache
def answer_no_repeat_class():
    """The processor class, built on first use: importing this module does not import torch."""
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    class AnswerNoRepeatNGram(NoRepeatNGramLogitsProcessor):
        """transformers' n-gram blocking over the generated tokens only (the prompt's n-grams stay allowed)."""

        def __init__(self, ngram_size: int, prompt_len: int):
            super().__init__(ngram_size)
            self.prompt_len = prompt_len

        def __call__(self, input_ids, scores):
            return super().__call__(input_ids[:, self.prompt_len :], scores)

    return AnswerNoRepeatNGram
