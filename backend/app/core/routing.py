"""Routers added to the app as flat route lists.

FastAPI 0.165's ``include_router`` keeps each included router as a nested matcher that is walked, with its
scope bookkeeping, for every request: in a profile of ``GET /api/v1/users/me`` it cost about a quarter of a
millisecond per request, more than the database lookup. ``include_flat`` re-declares each of the router's
routes on the app itself (what ``include_router`` did in earlier FastAPI versions): the app's router then
matches one flat list, and the routes, their dependencies, responses and OpenAPI entries are the same.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter

# Every parameter of add_api_route is an attribute of the APIRoute it built (router prefix, tags, dependencies
# and responses already merged in), so a route is re-declared from its own attributes.
_ROUTE_FIELDS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in {"self", "path", "endpoint", "route_class_override"}
)


def include_flat(app: FastAPI, router: APIRouter, *, prefix: str = "") -> None:
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"include_flat takes path operations only, not {type(route).__name__} ({route!r})")
        fields: dict[str, Any] = {name: getattr(route, name) for name in _ROUTE_FIELDS}
        app.router.add_api_route(prefix + route.path, route.endpoint, route_class_override=type(route), **fields)
