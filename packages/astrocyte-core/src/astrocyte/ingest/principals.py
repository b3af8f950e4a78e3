"""Principal trust: who an ingested message acts as.

A source's messages act as the source's configured principal. Only when the source lists
``trust_message_principals`` globs may a message name its own principal, and then the message acts
*for* that principal through the source (``AstrocyteContext(principal=<source>,
acting_for=<message>)``): the effective permissions are the intersection of both, so a message
can narrow what the source may do but never widen it.

A message that names a principal the source does not trust is **rejected** (permanent, code
``principal_untrusted``), not silently re-attributed: quietly writing it with the source's own,
usually broader, rights would turn the producer's attempt to scope a write into a wider write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from astrocyte.errors import AccessDeniedError
from astrocyte.types import AstrocyteContext

PRINCIPAL_PATTERN = re.compile(r"^(user|agent|service):[^\s]{1,255}$")


def is_principal(value: str) -> bool:
    """True when ``value`` has the ``user:<id>`` / ``agent:<id>`` / ``service:<id>`` shape."""
    return bool(PRINCIPAL_PATTERN.match(value))


@dataclass(frozen=True, slots=True)
class PrincipalPolicy:
    """The trust rule of one source."""

    source_id: str
    principal: str
    trusted_globs: tuple[str, ...] = ()

    def trusts(self, message_principal: str) -> bool:
        """True when the source may let a message act for ``message_principal``."""
        return is_principal(message_principal) and any(
            fnmatchcase(message_principal, glob) for glob in self.trusted_globs
        )

    def context_for(self, message_principal: str | None) -> AstrocyteContext:
        """The context a message is retained under; raises ``AccessDeniedError(code=
        "principal_untrusted")`` for a message principal the source does not trust."""
        if message_principal is None or message_principal == self.principal:
            return AstrocyteContext(principal=self.principal, source=self.source_id)
        if not self.trusts(message_principal):
            raise AccessDeniedError(
                f"source {self.source_id!r} does not trust message principals like the one given; "
                "add a matching glob to trust_message_principals or drop the principal field",
                code="principal_untrusted",
            )
        return AstrocyteContext(principal=self.principal, acting_for=message_principal, source=self.source_id)


def validate_globs(globs: Sequence[str]) -> tuple[str, ...]:
    """Globs must name a principal kind (``user:*`` yes, ``*`` no) so trust is never accidental."""
    for glob in globs:
        kind, sep, _ = glob.partition(":")
        if not sep or kind not in ("user", "agent", "service"):
            raise ValueError(f"{glob!r} must start with user:, agent: or service:")
    return tuple(globs)
