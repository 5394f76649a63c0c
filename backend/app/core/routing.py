"""Routers added to the app as flat route lists.

FastAPI 0.165's ``include_router`` keeps each included router as a nested matcher that is walked, with its
scope bookkeeping, for every request. ``include_flat`` re-declares each of the router's routes on the app itself
(what ``include_router`` did in earlier FastAPI versions): the app's router then matches one flat list, and the
routes, their dependencies, responses and OpenAPI entries are the same. The OpenAPI error collection
(app/core/openapi.py) and the route-protection test walk that flat list. What it costs or saves is measured in
docs/SCALING.md ("Framework internals, measured"), not here.

The list is walked in order until a route matches: ``GET /api/v1/users/me`` asked about twenty routes first,
each a few calls deep (scope bookkeeping, path lookup, regular expression). ``PrefixCheckedRoute`` answers
"no" to a path that does not start with the route's literal prefix (the part of the path before its first
parameter) with one string comparison, and asks the full matcher otherwise, so what matches is unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.routing import Match
from starlette.types import Scope

# Every parameter of add_api_route is an attribute of the APIRoute it built (router prefix, tags, dependencies
# and responses already merged in), so a route is re-declared from its own attributes.
_ROUTE_FIELDS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in {"self", "path", "endpoint", "route_class_override"}
)


class PrefixCheckedRoute(APIRoute):
    """An ``APIRoute`` that turns away paths outside its literal prefix before the full match."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.literal_prefix = path.split("{", 1)[0]
        self.is_static = self.literal_prefix == path

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # With no root_path the path matched is scope["path"] itself (starlette's get_route_path); the route's
        # regular expression begins with its literal prefix, or is that whole path for a route without parameters.
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            if (path != self.literal_prefix) if self.is_static else not path.startswith(self.literal_prefix):
                return Match.NONE, {}
        return super().matches(scope)


def include_flat(app: FastAPI, router: APIRouter, *, prefix: str = "") -> None:
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"include_flat takes path operations only, not {type(route).__name__} ({route!r})")
        fields: dict[str, Any] = {name: getattr(route, name) for name in _ROUTE_FIELDS}
        route_class = PrefixCheckedRoute if type(route) is APIRoute else type(route)
        app.router.add_api_route(prefix + route.path, route.endpoint, route_class_override=route_class, **fields)
