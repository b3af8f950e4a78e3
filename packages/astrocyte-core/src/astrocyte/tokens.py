"""Token budget estimation.

An estimate, not a tokenizer: about four characters per token for English text with BPE
tokenizers (OpenAI's own rule of thumb). It errs slightly high on short words, which is the safe
side for a budget, and costs nothing per hit.
"""

from __future__ import annotations

from astrocyte.types import MemoryHit

__all__ = ["estimate_tokens", "fit_budget"]

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (at least 1 for non-empty text)."""
    if not text:
        return 0
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def fit_budget(hits: list[MemoryHit], max_tokens: int | None) -> tuple[list[MemoryHit], bool]:
    """The leading hits whose texts fit in ``max_tokens``; True when one was dropped for it."""
    if max_tokens is None:
        return hits, False
    used = 0
    for position, hit in enumerate(hits):
        used += estimate_tokens(hit.text)
        if used > max_tokens:
            return hits[:position], True
    return hits, False
