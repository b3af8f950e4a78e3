"""DirectRoute calls request-only endpoints directly and leaves every other endpoint to FastAPI."""

from __future__ import annotations

from typing import Annotated

import httpx
from astrocyte_gateway import Settings, create_app
from astrocyte_gateway.direct_route import DirectRoute
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.routing import APIRoute


def _route(app: FastAPI, path: str) -> APIRoute:
    return next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == path)


def test_only_request_only_endpoints_skip_fastapis_handler() -> None:
    app = FastAPI()

    async def plain(request: Request) -> Response:
        return Response(b"ok")

    async def with_header(request: Request, token: Annotated[str | None, Header()] = None) -> Response:
        return Response(token or "")

    def blocking(request: Request) -> Response:  # sync: FastAPI runs it in a thread
        return Response(b"ok")

    for path, endpoint in (("/plain", plain), ("/header", with_header), ("/sync", blocking)):
        app.router.add_api_route(path, endpoint, methods=["POST"], route_class_override=DirectRoute)
    assert _route(app, "/plain").get_route_handler() is plain
    assert _route(app, "/header").get_route_handler() is not with_header
    assert _route(app, "/sync").get_route_handler() is not blocking


class Teapot(Exception):
    pass


async def test_direct_endpoints_keep_routing_errors_and_exception_handlers() -> None:
    app = FastAPI()

    async def http_error(request: Request) -> Response:
        raise HTTPException(404, "nothing here")

    async def own_error(request: Request) -> Response:
        raise Teapot()

    async def teapot(request: Request, exc: Exception) -> Response:
        return Response(b"short and stout", 418)

    app.add_exception_handler(Teapot, teapot)
    for path, endpoint in (("/http", http_error), ("/own", own_error)):
        app.router.add_api_route(path, endpoint, methods=["POST"], route_class_override=DirectRoute)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        assert (await http.post("/http")).status_code == 404
        handled = await http.post("/own")
        wrong_method = await http.get("/own")
    assert (handled.status_code, handled.content) == (418, b"short and stout")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"


def test_the_gateway_memory_routes_are_direct() -> None:
    app = create_app(Settings.from_env({}))
    for path in ("/v1/retain", "/v1/recall", "/v1/reflect", "/v1/forget"):
        route = _route(app, path)
        assert route.get_route_handler() is route.endpoint
