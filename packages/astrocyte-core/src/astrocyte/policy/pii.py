"""The PII barrier: every retained text passes through :meth:`PiiBarrier.screen`: the content, each
tag, and every string value of the metadata (:meth:`PiiBarrier.screen_metadata`).

Per detected type the action is ``redact`` (replace with ``[REDACTED:<type>]``), ``reject`` (raise
``PiiRejectedError`` naming the types only) or ``warn`` (keep the text, log the types and counts
only). A detected value never appears in a message or a log line.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from astrocyte.errors import PiiRejectedError
from astrocyte.policy.config import PII_TYPES, PiiAction, PiiBarrierConfig
from astrocyte.policy.pii_detectors import Detector, Span, build_detectors

logger = logging.getLogger("astrocyte.policy.pii")

_PRIORITY = {name: rank for rank, name in enumerate(PII_TYPES)}


def redaction_marker(pii_type: str) -> str:
    """The text that replaces a redacted value."""
    return f"[REDACTED:{pii_type}]"


class PiiBarrier:
    """Detects PII types and applies the configured action for each."""

    def __init__(self, config: PiiBarrierConfig) -> None:
        self.enabled = config.enabled
        all_detectors = build_detectors(config.phone_regions)
        # Kept in priority order so overlapping detections resolve deterministically.
        self._detectors: list[tuple[str, Detector]] = [
            (name, all_detectors[name]) for name in PII_TYPES if name in set(config.detectors)
        ]
        self._actions: dict[str, PiiAction] = {
            name: config.type_overrides.get(name, config.action) for name in PII_TYPES
        }

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping ``(start, end, type)`` detections, sorted by position.

        Where detections overlap, the higher-priority type (earlier in ``PII_TYPES``) wins.
        """
        candidates = [
            (_PRIORITY[name], start, end, name)
            for name, detect in self._detectors
            for start, end in detect(text)
            if end > start
        ]
        candidates.sort(key=lambda c: (c[0], c[1], c[1] - c[2]))
        starts: list[int] = []
        chosen: list[tuple[int, int, str]] = []
        for _, start, end, name in candidates:
            i = bisect.bisect_left(starts, start)
            if i > 0 and chosen[i - 1][1] > start:
                continue
            if i < len(chosen) and chosen[i][0] < end:
                continue
            starts.insert(i, start)
            chosen.insert(i, (start, end, name))
        return chosen

    def screen(self, text: str, where: str = "content") -> str:
        """Return ``text`` with redactions applied; raise if a type's action is ``reject``.
        ``where`` names the part of the retain in messages and logs (``content``, ``metadata``...)."""
        if not self.enabled or not text:
            return text
        found = self.find(text)
        if not found:
            return text
        counts = Counter(name for _, _, name in found)
        rejected = sorted(name for name in counts if self._actions[name] == "reject")
        if rejected:
            raise PiiRejectedError(
                f"{where} contains personal data or secrets of type(s) {', '.join(rejected)}; "
                "remove them and retry",
                code="pii_rejected",
                details={"types": rejected, "field": where},
            )
        warned = {name: n for name, n in counts.items() if self._actions[name] == "warn"}
        if warned:
            logger.warning("PII barrier: kept %s containing %s", where, _describe(warned.items()))
        redacted = [(s, e, n) for s, e, n in found if self._actions[n] == "redact"]
        if not redacted:
            return text
        logger.debug(
            "PII barrier: redacted %s in %s", _describe(Counter(n for _, _, n in redacted).items()), where
        )
        return _apply(text, redacted)

    def screen_metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``metadata`` with every string value screened, at any depth of nested objects and
        arrays. Keys are names, not data: they are kept as they are."""
        return {key: self._screen_json(value) for key, value in metadata.items()}

    def _screen_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.screen(value, "metadata")
        if isinstance(value, Mapping):
            return {key: self._screen_json(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._screen_json(item) for item in value]
        return value


def _describe(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name}={n}" for name, n in sorted(counts))


def _apply(text: str, spans: list[tuple[int, int, str]]) -> str:
    parts: list[str] = []
    pos = 0
    for start, end, name in spans:
        parts.append(text[pos:start])
        parts.append(redaction_marker(name))
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


__all__ = ["PiiBarrier", "Span", "redaction_marker"]
