"""A FastAPI route class for endpoints that take only the ``Request`` and return a ``Response``.

FastAPI's request handler resolves dependencies even for such an endpoint: it parses the query string
and cookies, builds a sub-response and its headers, and records telemetry data; its
``request_response`` wrapper then opens two exit stacks for ``yield`` dependencies and a second layer
of exception handling. About 20 µs per request that nothing reads (measured on ``POST /v1/recall``).
:class:`DirectRoute` calls such an endpoint directly: through :meth:`APIRoute.get_route_handler`,
FastAPI's documented hook for custom route classes, and through a lean route app. Everything around it
is unchanged: routing, ``405``, the app's exception handlers (reached through Starlette's
``ExceptionMiddleware``), and the OpenAPI operation, built from the same declaration. An endpoint
that declares any other parameter or dependency, or a route with its own body limit, keeps FastAPI's
handler.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        if _takes_only_the_request(self) and getattr(self, "max_body_size", None) is None:
            self.app = _direct_app(self.endpoint)

    def get_route_handler(self) -> Handler:
        if _takes_only_the_request(self):
            return self.endpoint  # type: ignore[no-any-return]
        return super().get_route_handler()


def _direct_app(endpoint: Handler) -> ASGIApp:
    """The route's ASGI app: FastAPI's ``request_response`` minus what only dependencies use (two
    exit stacks for ``yield`` dependencies) and a second exception-handling wrapper. Exceptions reach
    the app's ``ExceptionMiddleware``, which answers them with the same registered handlers."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


def _takes_only_the_request(route: APIRoute) -> bool:
    dependant = route.dependant
    declared = (
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
        dependant.dependencies,
        dependant.websocket_param_name,
        dependant.http_connection_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    )
    return (
        inspect.iscoroutinefunction(route.endpoint)
        and dependant.request_param_name is not None
        and not any(declared)
        and route.body_field is None
    )
