"""Input checks shared by every entry path, done before anything is written.

Size limits, metadata limits and PII are the policy engine's job; this module checks shape only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from astrocyte.errors import ValidationError
from astrocyte.types import ForgetSelector, RetainRequest

__all__ = [
    "refuse_non_standard_json",
    "forget_selector",
    "validate_retain_fields",
    "validate_bank_id",
    "validate_bank_ids",
    "validate_content",
    "validate_query",
    "validate_tags",
    "validate_max_results",
    "validate_max_tokens",
    "validate_time_range",
]

_MAX_IDEMPOTENCY_KEY = 512
_BANK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}")


def validate_bank_id(bank_id: object) -> str:
    """A bank id: 1–255 letters, digits or ``._:@-``, starting with a letter or digit."""
    if not isinstance(bank_id, str) or _BANK_ID.fullmatch(bank_id) is None:
        shown = repr(bank_id)[:80]
        raise ValidationError(
            f"invalid bank id {shown}: use 1-255 characters from letters, digits and '._:@-', "
            "starting with a letter or digit",
            code="bank_id_invalid",
        )
    return bank_id


def validate_bank_ids(bank_id: str | None, banks: Sequence[str] | None) -> list[str]:
    """The banks a read spans: ``bank_id`` and/or ``banks``, deduplicated in order."""
    if isinstance(banks, str):
        raise ValidationError("banks must be a list of bank ids, not a string", code="bank_id_invalid")
    wanted = ([bank_id] if bank_id is not None else []) + list(banks or ())
    if not wanted:
        raise ValidationError("name a bank with bank_id or banks", code="bank_required")
    return list(dict.fromkeys(validate_bank_id(b) for b in wanted))


def validate_content(content: object) -> str:
    """Content to retain: a string with at least one non-whitespace character."""
    if not isinstance(content, str):
        raise ValidationError("content must be a string", code="content_invalid")
    if not content.strip():
        raise ValidationError("content is empty: retain needs some text", code="content_empty")
    return content


def validate_query(query: object) -> str:
    """A recall or reflect query: non-empty text."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query is empty: recall needs some text to search for", code="query_empty")
    return query


def validate_tags(tags: Sequence[str] | None) -> tuple[str, ...]:
    """Tags as a tuple of non-empty strings (a lone string is a mistake, not a list of letters)."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        raise ValidationError("tags must be a list of strings, not a string", code="tags_invalid")
    out = tuple(tags)
    for tag in out:
        if not isinstance(tag, str) or not tag.strip():
            raise ValidationError("every tag must be a non-empty string", code="tags_invalid")
    return out


def validate_max_results(max_results: int, limit: int) -> int:
    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= limit:
        raise ValidationError(f"max_results must be an integer from 1 to {limit}", code="max_results_invalid")
    return max_results


def validate_max_tokens(max_tokens: int | None) -> int | None:
    if max_tokens is None:
        return None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValidationError("max_tokens must be a positive integer", code="max_tokens_invalid")
    return max_tokens


def validate_time_range(
    time_range: tuple[datetime | None, datetime | None] | None,
) -> tuple[datetime | None, datetime | None]:
    """``(start, end)``, start inclusive, end exclusive; either side may be open."""
    if time_range is None:
        return None, None
    try:
        start, end = time_range
    except (TypeError, ValueError):
        raise ValidationError("time_range must be a (start, end) pair", code="time_range_invalid") from None
    for bound in (start, end):
        if bound is not None and not isinstance(bound, datetime):
            raise ValidationError("time_range bounds must be datetimes or None", code="time_range_invalid")
    if start is not None and end is not None and _aware(start) >= _aware(end):
        raise ValidationError("time_range start must be before its end", code="time_range_invalid")
    return start, end


def _aware(value: datetime) -> datetime:
    # Naive datetimes are read as UTC, the rule the stores apply too.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def validate_retain_fields(request: RetainRequest) -> None:
    """Shapes of a retain request's optional fields (their sizes are the policy's job)."""
    metadata = request.metadata
    if not isinstance(metadata, dict) or (metadata and not all(isinstance(k, str) for k in metadata)):
        raise ValidationError("metadata must be an object with string keys", code="metadata_invalid")
    if request.occurred_at is not None and not isinstance(request.occurred_at, datetime):
        raise ValidationError("occurred_at must be a datetime", code="occurred_at_invalid")
    if request.source is not None and not isinstance(request.source, str):
        raise ValidationError("source must be a string", code="source_invalid")
    key = request.idempotency_key
    if key is not None and (not isinstance(key, str) or not key or len(key) > _MAX_IDEMPOTENCY_KEY):
        raise ValidationError(
            f"idempotency_key must be a non-empty string of at most {_MAX_IDEMPOTENCY_KEY} characters",
            code="idempotency_key_invalid",
        )


def forget_selector(
    memory_ids: Sequence[str] | None, tags: Sequence[str] | None, before: datetime | None, scope: str | None
) -> ForgetSelector:
    """The store selector for a forget call; at least one selector, ``scope="all"`` only alone."""
    if scope not in (None, "all"):
        raise ValidationError(f"scope must be 'all' or omitted, not {scope!r}", code="forget_scope_invalid")
    if isinstance(memory_ids, str):
        raise ValidationError("memory_ids must be a list of ids, not a string", code="memory_ids_invalid")
    ids = tuple(memory_ids or ())
    if not all(isinstance(i, str) and i for i in ids):
        raise ValidationError("memory_ids must be non-empty strings", code="memory_ids_invalid")
    tag_tuple = validate_tags(tags)
    if before is not None and not isinstance(before, datetime):
        raise ValidationError("before must be a datetime", code="before_invalid")
    narrowed = bool(ids or tag_tuple or before is not None)
    if scope == "all":
        if narrowed:
            raise ValidationError(
                "scope='all' clears the whole bank and cannot be combined with other selectors",
                code="forget_selector_conflict",
            )
        return ForgetSelector(all_=True)
    if not narrowed:
        raise ValidationError(
            "forget needs memory_ids, tags or before; to clear the whole bank pass scope='all'",
            code="forget_selector_required",
        )
    return ForgetSelector(memory_ids=ids, tags=tag_tuple, before=before)


def _non_standard(constant: str) -> None:
    raise ValueError(constant)


def refuse_non_standard_json(raw: bytes, code: str = "json_non_standard") -> None:
    """Refuse JSON that uses ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON; pydantic's parser takes
    them and they would be stored as ``null``). Call it after a depth-bounded parse succeeded: the
    scan is one substring search, and only a body containing those words is parsed again."""
    if b"NaN" not in raw and b"Infinity" not in raw:
        return
    try:
        json.loads(raw, parse_constant=_non_standard)
    except ValueError as exc:
        if str(exc) in ("NaN", "Infinity", "-Infinity"):
            raise ValidationError(
                f"the body is not standard JSON: {exc} is not a JSON number", code=code
            ) from None
