"""Access control: which principal may do what to which bank.

Grants are ``{bank_id, principal, permissions}``; ``bank_id`` and ``principal`` are case-sensitive
fnmatch globs. Permissions: ``read``, ``write``, ``forget``, ``admin`` and ``*``. ``admin`` implies
``read``, ``write`` and ``forget`` (a bank's administrator can do everything to it); ``*`` is every
permission, so today it equals ``admin``. A principal's permissions on a bank are the union of every
matching grant. With access control on, anything not granted is denied.

Grants are compiled once; the grants that apply to a principal are computed once per principal and
kept in a bounded LRU, because ``authorize`` runs on every call.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from astrocyte.errors import AccessDeniedError, NotFoundError, UnauthenticatedError, ValidationError
from astrocyte.policy.config import AccessGrant
from astrocyte.policy.identity import context_principals, is_glob
from astrocyte.types import AstrocyteContext

PERMISSIONS: frozenset[str] = frozenset({"read", "write", "forget", "admin"})
_EXPANSION: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"write"}),
    "forget": frozenset({"forget"}),
    "admin": PERMISSIONS,
    "*": PERMISSIONS,
}
_NONE: frozenset[str] = frozenset()


def bank_not_found(bank_id: str) -> NotFoundError:
    """The one error for "this bank does not exist" and "you may not see this bank".

    The engine must raise this same error for a truly absent bank, so the two cannot be told apart.
    """
    return NotFoundError(f"bank {bank_id!r} not found", code="bank_not_found")


def expand_permissions(names: Iterable[str]) -> frozenset[str]:
    """Expand grant permission names (``admin`` and ``*`` imply the rest)."""
    out: set[str] = set()
    for name in names:
        out |= _EXPANSION[name]
    return frozenset(out)


def _matcher(pattern: str) -> Callable[[str], bool]:
    if not is_glob(pattern):
        return pattern.__eq__
    # Same semantics as fnmatch.fnmatchcase, compiled once instead of looked up per call.
    return re.compile(fnmatch.translate(pattern)).match  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _CompiledGrant:
    bank: Callable[[str], bool]
    principal: Callable[[str], bool]
    permissions: frozenset[str]


class AccessController:
    """Evaluates grants. Disabled means every call is allowed."""

    def __init__(
        self,
        grants: Sequence[AccessGrant],
        *,
        enabled: bool,
        cache_size: int = 4096,
        owner_banks: bool = False,
    ) -> None:
        self.enabled = enabled
        self.owner_banks = owner_banks
        self._grants = tuple(
            _CompiledGrant(_matcher(g.bank_id), _matcher(g.principal), expand_permissions(g.permissions))
            for g in grants
        )
        self._for_principal = lru_cache(maxsize=cache_size)(self._compile_for_principal)

    def _compile_for_principal(self, principal: str) -> tuple[_CompiledGrant, ...]:
        return tuple(g for g in self._grants if g.principal(principal))

    def principal_permissions(self, principal: str, bank_id: str) -> frozenset[str]:
        """Permissions one principal holds on one bank (ignores ``acting_for``)."""
        if self.owner_banks and bank_id == principal:
            return PERMISSIONS
        perms: frozenset[str] = _NONE
        for grant in self._for_principal(principal):
            if grant.bank(bank_id):
                perms = perms | grant.permissions
                if perms == PERMISSIONS:
                    break
        return perms

    def permissions(self, context: AstrocyteContext | None, bank_id: str) -> frozenset[str]:
        """Effective permissions of a context on a bank: a principal acting for another gets the
        intersection of both principals' permissions. No principal means no permissions."""
        if not self.enabled:
            return PERMISSIONS
        principal, acting_for = context_principals(context)
        if principal is None:
            return _NONE
        if self.owner_banks and acting_for is not None and bank_id == acting_for:
            # A trusted caller acting for the owner, on the owner's own bank, acts as the owner.
            return PERMISSIONS
        perms = self.principal_permissions(principal, bank_id)
        if acting_for is not None and perms:
            perms = perms & self.principal_permissions(acting_for, bank_id)
        return perms

    def authorize(self, context: AstrocyteContext | None, bank_id: str, permission: str) -> None:
        """Allow or raise. Anything but a write on a bank the caller cannot read raises
        :func:`bank_not_found` (no existence leak); otherwise a denial is ``AccessDeniedError``."""
        if permission not in PERMISSIONS:
            raise ValidationError(f"unknown permission {permission!r}", code="permission_invalid")
        if not self.enabled:
            return
        principal, _ = context_principals(context)
        if principal is None:
            raise UnauthenticatedError(
                "access control is enabled: the call needs a principal (user:, agent: or service:)",
                code="principal_required",
            )
        perms = self.permissions(context, bank_id)
        if permission in perms:
            return
        if permission != "write" and "read" not in perms:
            raise bank_not_found(bank_id)
        raise AccessDeniedError(
            f"{principal} may not {permission} bank {bank_id!r}; ask an administrator for a grant",
            code="access_denied",
        )

    def readable(self, context: AstrocyteContext | None, bank_ids: Iterable[str]) -> list[str]:
        """The subset of ``bank_ids`` the caller may read, order preserved."""
        if not self.enabled:
            return list(bank_ids)
        return [b for b in bank_ids if "read" in self.permissions(context, b)]
