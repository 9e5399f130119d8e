"""TRL's fused LM head scores only the positions that carry a label, on a CPU too.

TRL 1.16 computes SFT's cross-entropy and RLOO's log-probabilities through a fused LM head
(`trl.trainer.utils.add_fused_lm_head`, `ChunkedLogProbFunction`). On CUDA/XPU with Triton it projects only the
positions with a label (`labels != -100`: the answer tokens) onto the vocabulary; on any other device it projects every
position, prompt and padding included, because "the number of valid positions would change the tile shapes on every
batch and trigger a recompilation" (Neuron). A CPU in eager mode compiles nothing, so there the prompt's positions are
pure cost: SmolLM2's 49,152-token head, forward and backward, over ~90 % of the aggregator's tokens (its prompts hold
the five agents' answers, its labels one answer).

`score_labelled_positions_only()` makes TRL's choice of the compact path (the `_use_triton` that `trl.trainer.utils`
imported) answer yes for CPU tensors too. TRL's own CPU kernel (`_forward_tile`, chosen by the kernels module's
`_use_triton`, left alone) then runs on the labelled rows; the loss and log-probabilities are the same per position.
Measured by bench/train_steps on a make run's artifacts (2 cores, bench/results/train_steps.md): one aggregator SFT
step 45.2 → 24.0 s, one RLOO step 38.2 → 33.2 s, the same per-step losses, rewards and KL.
"""

from __future__ import annotations

import warnings

_MARK = "cmva_scores_cpu_labels_only"


def score_labelled_positions_only() -> bool:
    """Patch TRL (idempotent) so its fused LM head scores only labelled positions on a CPU; False (with a warning)
    where the TRL installed has no such switch, and nothing is changed."""
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if current is None or not callable(current):
        warnings.warn(
            "this TRL has no trl.trainer.utils._use_triton: its fused LM head keeps scoring every position on a CPU "
            "(slower training, same results); cmva was written against trl 1.16",
            stacklevel=2,
        )
        return False
    if getattr(current, _MARK, False):
        return True

    def compact(device) -> bool:
        return device.type == "cpu" or current(device)

    setattr(compact, _MARK, True)
    trl_utils._use_triton = compact
    return True
