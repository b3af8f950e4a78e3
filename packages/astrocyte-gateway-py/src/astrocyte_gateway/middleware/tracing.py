"""Optional OpenTelemetry tracing (``ASTROCYTE_OTEL_ENABLED=true``, extra ``otel``): one server span
per request, continuing the caller's W3C ``traceparent``, named after the route template and
carrying the request id, principal, bank and status. Exporters are configured the OpenTelemetry way
(the SDK's environment variables, or ``opentelemetry-instrument``).

Recent FastAPI versions open the server span themselves once a tracer provider is configured; then
this middleware adds the gateway's attributes to that span instead of opening a second one."""

from __future__ import annotations

from typing import Any

from astrocyte_gateway._asgi import ASGIApp, Message, Receive, Scope, Send, scope_state


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracer_provider: Any = None) -> None:
        from opentelemetry import propagate, trace

        self.app = app
        self._trace = trace
        self._propagate = propagate
        self.tracer = trace.get_tracer("astrocyte_gateway", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current = self._trace.get_current_span()
        if current.is_recording():  # the framework already traces this request: enrich its span
            await self._traced(current, scope, receive, send, rename=False)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", context=self._propagate.extract(carrier),
            kind=self._trace.SpanKind.SERVER,
        ) as span:  # fmt: skip
            await self._traced(span, scope, receive, send, rename=True)

    async def _traced(self, span: Any, scope: Scope, receive: Receive, send: Send, rename: bool) -> None:
        started = False

        async def send_and_record(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # Recorded now: a framework-owned span may end as soon as the body is sent.
                self._finish(span, scope, message["status"], rename)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if not started:
                self._finish(span, scope, 500, rename)

    def _finish(self, span: Any, scope: Scope, status: int, rename: bool) -> None:
        route = getattr(scope.get("route"), "path", None)
        if route and rename:
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
        state = scope_state(scope)
        attributes = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "http.response.status_code": status,
            "astrocyte.request_id": state.get("request_id"),
            "astrocyte.principal": state.get("principal"),
            "astrocyte.bank": state.get("bank_id"),
        }
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        if status >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
