"""Exponential backoff with jitter, shared by reconnects and sink retries."""

from __future__ import annotations

import random


class Backoff:
    """``initial * 2**n`` seconds capped at ``maximum``, each spread by +/-20% so replicas that
    failed together do not retry together."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (grows with each call until :meth:`reset`)."""
        base: float = min(self.maximum, self.initial * 2.0 ** min(self._attempt, 40))
        self._attempt += 1
        return base * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._attempt = 0
