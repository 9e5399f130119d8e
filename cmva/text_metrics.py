"""Surface measures of generated text that no reward model sees: how often an answer loops."""

from __future__ import annotations

from collections.abc import Sequence


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Share of the text's word n-grams (lower-cased) that repeat an earlier one: 0 for none, → 1 for a loop.

    Example:
        >>> round(repeated_ngram_share("be kind to her and be kind to her and be kind to her"), 2)  # 6 of 11
        0.55
        >>> repeated_ngram_share("short text")
        0.0
    """
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def looping_share(texts: Sequence[str], n: int = 4) -> float:
    """Share of the texts that repeat one of their own word n-grams (nan for none).

    Example:
        >>> looping_share(["be kind and be kind and be kind and", "be kind"])
        0.5
    """
    return sum(repeated_ngram_share(t, n) > 0 for t in texts) / len(texts) if texts else float("nan")
