"""One error hierarchy for every entry path.

Each error carries a stable ``code`` (machine-readable, never reworded) and the ``http_status`` the
gateway answers with. Messages say what was wrong and what to do; they never echo secrets or
redacted values.
"""

from __future__ import annotations

from typing import Any


class AstrocyteError(Exception):
    """Base of every error the library raises on purpose."""

    code: str = "astrocyte_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class ValidationError(AstrocyteError):
    code = "validation_error"
    http_status = 400


class ConfigError(ValidationError):
    """The configuration file or mapping is invalid. Raised at start-up, never mid-request."""

    code = "config_invalid"


class UnauthenticatedError(AstrocyteError):
    code = "unauthenticated"
    http_status = 401


class AccessDeniedError(AstrocyteError):
    code = "access_denied"
    http_status = 403


class NotFoundError(AstrocyteError):
    code = "not_found"
    http_status = 404


class ConflictError(AstrocyteError):
    code = "conflict"
    http_status = 409


class TooLargeError(AstrocyteError):
    code = "too_large"
    http_status = 413


class PiiRejectedError(AstrocyteError):
    code = "pii_rejected"
    http_status = 422


class RateLimitedError(AstrocyteError):
    code = "rate_limited"
    http_status = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = max(0.0, retry_after)


class NotSupportedError(AstrocyteError):
    code = "not_supported"
    http_status = 501


class ProviderUnavailableError(AstrocyteError):
    """A store, embedder or LLM could not be reached. Transient: callers may retry."""

    code = "provider_unavailable"
    http_status = 503
