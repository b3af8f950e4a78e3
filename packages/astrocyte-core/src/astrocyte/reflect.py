"""Reflect's two ways to answer: a prompt for the LLM, or an extractive answer without one.

Memories are listed higher authority tier first (then by score); the prompt tells the model to
prefer higher tiers when memories conflict, and to say so when the memories do not answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from astrocyte.tokens import CHARS_PER_TOKEN
from astrocyte.types import MemoryHit

__all__ = [
    "NO_MEMORIES_ANSWER",
    "SYSTEM_PROMPT",
    "build_prompt",
    "confidence",
    "extractive_answer",
    "order_hits",
]

NO_MEMORIES_ANSWER = "I have no memories that answer this."

SYSTEM_PROMPT = (
    "You answer questions using only the memories provided. Each memory has an id, and may have an "
    "authority tier; tiers are listed from most to least authoritative. When memories conflict, prefer "
    "the one from the more authoritative tier, then the more recent one. If the memories do not answer "
    "the question, say so plainly instead of guessing. Answer concisely."
)

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have how i in is it its me my of on or "
    "our so than that the their them then there these they this to was we were what when where which "
    "who why will with you your".split()
)
_EXTRACT_FROM = 3  # hits an extractive answer draws a sentence from


def order_hits(hits: Sequence[MemoryHit], tier_rank: Callable[[str | None], int]) -> list[MemoryHit]:
    """Higher authority tier first, then higher score."""
    return sorted(hits, key=lambda h: (tier_rank(h.authority_tier), -h.score))


def build_prompt(query: str, hits: Sequence[MemoryHit], authority_context: str | None) -> tuple[str, str]:
    """The ``(system, user)`` messages for the LLM."""
    lines = []
    for hit in hits:
        moment = hit.occurred_at or hit.retained_at
        when = moment.isoformat() if moment is not None else "unknown"
        tier = f' tier="{hit.authority_tier}"' if hit.authority_tier else ""
        text = hit.text.replace("</memory>", "</ memory>")  # memories cannot close the block early
        lines.append(f'<memory id="{hit.memory_id}" bank="{hit.bank_id}"{tier} date="{when}">{text}</memory>')
    parts = []
    if authority_context:
        parts.append(f"Authority tiers:\n{authority_context}")
    parts.append("Memories:\n" + "\n".join(lines))
    parts.append(f"Question: {query}")
    return SYSTEM_PROMPT, "\n\n".join(parts)


def extractive_answer(query: str, hits: Sequence[MemoryHit], max_tokens: int | None = None) -> str:
    """The sentence sharing most words with the query from each of the first few hits, joined."""
    if not hits:
        return NO_MEMORIES_ANSWER
    wanted = _content_words(query)
    picked: list[str] = []
    for hit in hits[:_EXTRACT_FROM]:
        sentence = _best_sentence(hit.text, wanted)
        if sentence and sentence not in picked:
            picked.append(sentence)
    answer = " ".join(picked) or hits[0].text.strip()
    if max_tokens is not None and len(answer) > max_tokens * CHARS_PER_TOKEN:
        answer = answer[: max_tokens * CHARS_PER_TOKEN].rsplit(" ", 1)[0].rstrip() + "…"
    return answer


def confidence(hits: Sequence[MemoryHit]) -> float:
    """Mean fused score (0..1) of the best three hits; 0 without hits."""
    if not hits:
        return 0.0
    best = sorted((h.score for h in hits), reverse=True)[:3]
    return round(min(1.0, max(0.0, sum(best) / len(best))), 4)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _best_sentence(text: str, wanted: set[str]) -> str:
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    if not sentences:
        return ""
    return max(sentences, key=lambda s: len(wanted & _content_words(s)))
