"""Optional OpenTelemetry: a server span per request, continuing the caller's trace."""

from __future__ import annotations

import pytest
from astrocyte import Astrocyte
from conftest import serve

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

EXPORTER = in_memory.InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


async def test_request_span_carries_route_request_id_and_parent(brain: Astrocyte) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with serve({"ASTROCYTE_OTEL_ENABLED": "true"}, brain) as (http, _):
        await http.post("/v1/retain", json={"content": "x", "bank_id": "b"})
        response = await http.post(
            "/v1/recall", json={"query": "x", "bank_id": "b"}, headers={"traceparent": parent}
        )
    span = next(s for s in EXPORTER.get_finished_spans() if s.attributes.get("url.path") == "/v1/recall")
    assert span.name == "POST /v1/recall"
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["astrocyte.request_id"] == response.headers["x-request-id"]
    assert span.attributes["astrocyte.bank"] == "b"
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_opens_its_own_server_span_when_the_framework_does_not() -> None:
    from astrocyte_gateway.middleware.tracing import TracingMiddleware

    async def plain_app(scope: dict, receive: object, send: object) -> None:
        scope["state"]["principal"] = "user:dev"
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/plain", "headers": [], "state": {"request_id": "r-1"}}
    await TracingMiddleware(plain_app)(scope, receive, send)
    span = next(s for s in EXPORTER.get_finished_spans() if s.attributes.get("url.path") == "/plain")
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes["astrocyte.principal"] == "user:dev"
    assert span.attributes["http.response.status_code"] == 204


async def test_no_spans_when_tracing_is_off_even_with_a_provider_installed(brain: Astrocyte) -> None:
    EXPORTER.clear()
    async with serve({}, brain) as (http, _):
        await http.post("/v1/retain", json={"content": "x", "bank_id": "b"})
        assert (await http.post("/v1/recall", json={"query": "x", "bank_id": "b"})).status_code == 200
    assert EXPORTER.get_finished_spans() == ()
