"""A lean path for the hottest route: ``POST /v1/namespaces/{namespace}/search``.

For a small search FastAPI's routing costs more CPU than Ragtide's own work: matching the
request against every route, solving the endpoint's parameters, and three layers of
exception and exit-stack middleware. ``SearchFastPath`` is a pure-ASGI middleware, the
innermost of Ragtide's own (so the request id, the body limit, the in-flight cap, the
metrics and the access log wrap it as they wrap every route), that serves this one route
itself:

- it matches the path with the route's own regex and checks the namespace with the
  route's own pattern; anything else, or a request it would judge differently (a root
  path, a namespace the pattern refuses: FastAPI answers those), goes on to FastAPI;
- it calls the route's endpoint function with the same ``Request``, so authentication,
  the scope and rate checks, body parsing and validation are the route's;
- an exception is answered by the app's own exception handler for it (the one FastAPI
  would pick), so every status, code, message and header is the same;
- ``scope["route"]`` is the route, so metrics label it by the same template.

It finds the route once, at the first request, and stands aside for good if the route is
missing or another route would match its paths first.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ragtide.api.schemas import NAMESPACE_PATTERN

__all__ = ["SEARCH_PATH", "SearchFastPath", "warm_routes"]

SEARCH_PATH = "/v1/namespaces/{namespace}/search"
_PATH = re.compile(r"/v1/namespaces/([^/]+)/search")
_NAMESPACE = re.compile(NAMESPACE_PATTERN.removeprefix("^").removesuffix("$"))
_PROBE = "/v1/namespaces/probe/search"

Handler = Callable[[Request, Exception], Any]


class SearchFastPath:
    """Pure ASGI: serves ``POST`` ``SEARCH_PATH`` through its endpoint, without the router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None
        self._resolved = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            found = _PATH.fullmatch(scope["path"])
            if found is not None and _NAMESPACE.fullmatch(found[1]):
                route = self._route if self._resolved else self._resolve(scope["app"])
                if route is not None:
                    await self._serve(route, found[1], scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _resolve(self, app: Any) -> Any:
        """The search route, if it is the first route FastAPI would serve its paths with."""
        self._route, self._resolved = _first_route(app.router.routes, _PROBE, "POST"), True
        if getattr(self._route, "path", None) != SEARCH_PATH:
            self._route = None
        return self._route

    async def _serve(
        self, route: Any, namespace: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What FastAPI's router records when it picks the route.
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {"namespace": namespace}
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(namespace, request)
        except Exception as exc:
            handler = _handler(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await _call(handler, request, exc)
        await response(scope, receive, send)


def _first_route(routes: Iterable[Any], path: str, method: str) -> Any:
    """The first route (in FastAPI's order, included routers opened) matching ``path``
    and ``method``, or a mount whose prefix covers it; None if none does."""
    for route in routes:
        nested = getattr(route, "effective_candidates", None)  # an included router
        if callable(nested):
            found = _first_route(nested(), path, method)
            if found is not None:
                return found
            continue
        regex = getattr(route, "path_regex", None)
        if regex is None or not regex.match(path):
            continue
        methods = getattr(route, "methods", None)
        if methods is None:  # a mount, or a route for every method: it would be picked
            return route
        if method in methods:
            return getattr(route, "original_route", route)
    return None


def warm_routes(routes: Iterable[Any]) -> int:
    """Have FastAPI prepare every route now; the number of routes seen.

    FastAPI prepares an included router's routes (a pydantic adapter per parameter and
    response field) when the router first serves a request: ~0.1-0.3 s for Ragtide's, paid
    by the first request after start. Called before the app reports ready, so that the
    first search after ready is served in the normal time. Routers are opened as
    ``_first_route`` opens them; a FastAPI without lazily prepared routers has nothing to
    do here.
    """
    seen = 0
    for route in routes:
        for name in ("effective_candidates", "effective_low_priority_routes"):
            nested = getattr(route, name, None)
            if callable(nested):
                seen += warm_routes(nested())
        seen += 1
    return seen


def _handler(handlers: dict[Any, Handler], exc: Exception) -> Handler | None:
    """The handler Starlette's exception middleware would pick for ``exc`` (by status for
    an ``HTTPException``, else by class; 500 and ``Exception`` are the outer boundary's)."""
    if isinstance(exc, HTTPException) and exc.status_code != 500:
        found = handlers.get(exc.status_code)
        if found is not None:
            return found
    for cls in type(exc).__mro__:
        if cls is not Exception and cls in handlers:
            return handlers[cls]
    return None


async def _call(handler: Handler, request: Request, exc: Exception) -> Response:
    if inspect.iscoroutinefunction(handler):
        response: Response = await handler(request, exc)
    else:
        response = await run_in_threadpool(handler, request, exc)
    return response
