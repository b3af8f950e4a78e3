"""Token budget estimation.

An estimate, not a tokenizer: about four characters per token for English text with BPE
tokenizers (OpenAI's own rule of thumb). It errs slightly high on short words, which is the safe
side for a budget, and costs nothing per hit.
"""

from __future__ import annotations

__all__ = ["estimate_tokens"]

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (at least 1 for non-empty text)."""
    if not text:
        return 0
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
