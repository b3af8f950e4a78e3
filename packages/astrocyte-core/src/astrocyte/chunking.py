"""Splitting retained content into searchable chunks.

Short content (the common case: a fact, a chat turn) is one chunk, untouched. Longer content is
packed greedily from sentences (paragraph breaks and sentence ends are the preferred cut points) into
chunks of at most ``max_chars``; a sentence longer than that is cut at whitespace. Each chunk after
the first repeats up to ``overlap_chars`` of the previous one's tail, so a fact spanning a cut is
still found whole in one chunk.
"""

from __future__ import annotations

import re

__all__ = ["chunk_text"]

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n\s*\n")


def chunk_text(text: str, max_chars: int = 1200, overlap_chars: int = 150) -> list[str]:
    """Chunks of ``text``, each at most ``max_chars`` characters; never empty for non-blank text."""
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    pieces = [p for seg in _SENTENCE_END.split(text) if seg for p in _hard_split(seg.strip(), max_chars) if p]
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if len(candidate) <= max_chars:
            current = candidate
            continue
        chunks.append(current)
        tail = _tail(current, overlap_chars)
        current = f"{tail} {piece}" if tail and len(tail) + 1 + len(piece) <= max_chars else piece
    if current:
        chunks.append(current)
    return chunks


def _hard_split(segment: str, max_chars: int) -> list[str]:
    """Cut an over-long sentence at whitespace (or anywhere, for one enormous word)."""
    out: list[str] = []
    while len(segment) > max_chars:
        cut = segment.rfind(" ", max_chars // 2, max_chars + 1)
        if cut <= 0:
            cut = max_chars
        out.append(segment[:cut].rstrip())
        segment = segment[cut:].lstrip()
    out.append(segment)
    return out


def _tail(chunk: str, overlap_chars: int) -> str:
    """The last ``overlap_chars`` of a chunk, starting at a word boundary."""
    if overlap_chars <= 0:
        return ""
    tail = chunk[-overlap_chars:]
    if len(tail) < len(chunk):
        space = tail.find(" ")
        tail = tail[space + 1 :] if space >= 0 else ""
    return tail
