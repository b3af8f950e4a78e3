"""Principals: who a call acts as.

A principal is ``<kind>:<id>`` with kind ``user``, ``agent`` or ``service``. Ids are 1-255
characters of letters, digits and ``._:@+-`` (so e-mail addresses and ``org:team`` ids fit) and
never contain glob characters, so a principal can never accidentally match like a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from astrocyte.errors import ValidationError
from astrocyte.types import AstrocyteContext

PRINCIPAL_KINDS: tuple[str, ...] = ("user", "agent", "service")

_PRINCIPAL_RE = re.compile(r"(user|agent|service):([A-Za-z0-9][A-Za-z0-9._:@+\-]{0,254})")
_GLOB_CHARS = frozenset("*?[")
_PATTERN_RE = re.compile(r"[A-Za-z0-9._:@+\-*?\[\]!]{1,300}")


@dataclass(frozen=True, slots=True)
class Principal:
    """A parsed principal; ``str(p)`` gives back the canonical ``kind:id`` form."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


def parse_principal(value: str) -> Principal:
    """Parse ``user:<id>`` / ``agent:<id>`` / ``service:<id>``.

    Raises ``ValidationError(code="principal_invalid")`` for anything else.
    """
    match = _PRINCIPAL_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(
            "principal must be 'user:<id>', 'agent:<id>' or 'service:<id>' with an id of 1-255 "
            "letters, digits or ._:@+- characters",
            code="principal_invalid",
        )
    return Principal(kind=match.group(1), id=match.group(2))


def validate_principal_pattern(pattern: str) -> None:
    """Check a grant's principal glob: ``*``, ``user:*``, ``service:ingest-*`` or a literal principal.

    A pattern without glob characters must be a valid principal, so a typo such as ``usr:alice``
    fails at start-up instead of silently granting nothing.
    """
    if not _PATTERN_RE.fullmatch(pattern):
        raise ValidationError(f"invalid principal pattern {pattern!r}", code="principal_invalid")
    if _GLOB_CHARS.isdisjoint(pattern):
        parse_principal(pattern)
        return
    kind = pattern.split(":", 1)[0]
    if ":" in pattern and _GLOB_CHARS.isdisjoint(kind) and kind not in PRINCIPAL_KINDS:
        raise ValidationError(
            f"principal pattern {pattern!r} names unknown kind {kind!r}; use user, agent or service",
            code="principal_invalid",
        )


@lru_cache(maxsize=4096)  # contexts are frozen; this runs on every call
def context_principals(context: AstrocyteContext | None) -> tuple[str | None, str | None]:
    """Return the validated ``(principal, acting_for)`` of a context (either may be ``None``)."""
    if context is None:
        return None, None
    principal = str(parse_principal(context.principal)) if context.principal is not None else None
    acting_for = str(parse_principal(context.acting_for)) if context.acting_for is not None else None
    if acting_for is not None and principal is None:
        raise ValidationError("acting_for requires a calling principal", code="principal_invalid")
    return principal, acting_for


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` contains fnmatch wildcard characters."""
    return not _GLOB_CHARS.isdisjoint(pattern)
