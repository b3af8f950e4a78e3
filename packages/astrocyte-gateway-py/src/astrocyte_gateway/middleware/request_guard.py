"""Refuse requests whose headers are ambiguous, oversized, or could come from another web site.

One pass over the header list, before anything else reads it:

- the header block over ``ASTROCYTE_MAX_HEADER_BYTES`` is 431 ``headers_too_large``; an
  ``Authorization`` or ``X-API-Key`` value over ``ASTROCYTE_MAX_CREDENTIAL_BYTES`` is 401
  ``credential_too_large`` (neither is parsed further, and the log names the header, not its value);
- two ``Authorization`` or ``X-API-Key`` headers, or two ``X-Astrocyte-Principal`` headers that
  disagree, are 400 ``header_ambiguous``: a proxy that reads the last one would see another caller;
- a ``Host`` that is not an IP literal, a single-label name (``localhost``, a compose service), a
  ``*.localhost`` name or one of ``ASTROCYTE_ALLOWED_HOSTS`` is 400
  ``host_not_allowed`` (DNS rebinding: a web page whose name resolves to 127.0.0.1 reaches a loopback
  gateway with its own name as ``Host``);
- an ``Origin`` that is neither this gateway's own origin nor one of ``ASTROCYTE_CORS_ORIGINS`` is
  403 ``origin_not_allowed`` (a browser sends ``Origin`` on every cross-site POST, "simple" or not);
- a ``POST``, ``PUT`` or ``PATCH`` with a body whose ``Content-Type`` is not JSON is 415
  ``unsupported_media_type`` (``text/plain`` is the content type a page may send cross-site without
  a preflight).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from astrocyte_gateway._asgi import ASGIApp, Receive, Scope, Send, send_error

log = logging.getLogger("astrocyte_gateway.request_guard")

_CREDENTIALS = (b"authorization", b"x-api-key")
_BODY_METHODS = ("POST", "PUT", "PATCH")


class RequestGuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        max_credential_bytes: int,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_credential_bytes = max_credential_bytes
        hosts = {h.lower() for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.allowed_hosts = frozenset(hosts)
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in allowed_origins)
        self.any_origin = "*" in self.allowed_origins
        self._host_ok: dict[bytes, bool] = {}  # Host values are few; cache the decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                status, code, detail = refusal
                log.warning("request refused: %s (%s %s)", code, scope["method"], scope["path"])
                await send_error(send, scope, status, code, detail)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        total = 0
        credentials: tuple[bytes, ...] = ()
        principal = host = origin = content_type = None
        has_body = False
        for name, value in scope["headers"]:
            total += len(name) + len(value) + 4
            if name in _CREDENTIALS:
                if name in credentials:
                    return 400, "header_ambiguous", f"send one {name.decode()} header, not several"
                if len(value) > self.max_credential_bytes:
                    return (
                        401,
                        "credential_too_large",
                        f"the {name.decode()} value is longer than {self.max_credential_bytes} bytes",
                    )
                credentials = (*credentials, name)
            elif name == b"x-astrocyte-principal":
                if principal is not None and principal != value:
                    return (
                        400,
                        "header_ambiguous",
                        "X-Astrocyte-Principal is given twice with different values",
                    )
                principal = value
            elif name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if total > self.max_header_bytes:
            return (
                431,
                "headers_too_large",
                f"the request headers are larger than {self.max_header_bytes} bytes",
            )
        if host is not None and not self._host_allowed(host):
            return 400, "host_not_allowed", "the Host header names a host this gateway does not serve"
        if origin is not None and not self._origin_allowed(origin, host):
            return 403, "origin_not_allowed", "requests from this web origin are not allowed"
        if has_body and scope["method"] in _BODY_METHODS and not _is_json(content_type):
            return 415, "unsupported_media_type", "send the body as application/json"
        return None

    def _host_allowed(self, host: bytes) -> bool:
        known = self._host_ok.get(host)
        if known is None:
            known = self.any_host or _host_name_allowed(
                _strip_port(host.decode("latin-1").lower()), self.allowed_hosts
            )
            if len(self._host_ok) < 1024:
                self._host_ok[host] = known
        return known

    def _origin_allowed(self, origin: bytes, host: bytes | None) -> bool:
        text = origin.decode("latin-1").lower()
        if self.any_origin or text in self.allowed_origins:
            return True
        # Same origin: the page was served by this gateway (the docs UI).
        scheme, sep, authority = text.partition("://")
        return bool(
            sep
            and host is not None
            and scheme in ("http", "https")
            and authority == host.decode("latin-1").lower()
        )


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _host_name_allowed(name: str, allowed: frozenset[str]) -> bool:
    # An IP literal cannot be rebound: a page is only ever same-origin with it if the gateway served it.
    # Nor can a single-label name (a compose or cluster service name): a rebinding attacker needs a
    # name in a domain whose DNS they control.
    if name.startswith("[") or name.replace(".", "").isdigit() or "." not in name:
        return True
    return name in allowed or name.endswith(".localhost")


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
