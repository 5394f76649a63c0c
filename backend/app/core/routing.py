"""Routers added to the app as flat route lists.

FastAPI 0.165's ``include_router`` keeps each included router as a nested matcher (``_IncludedRouter``) that is
walked, with its scope bookkeeping, for every request, and matched twice (once to find the router, once in it).
``include_flat`` re-declares each of the router's routes on the app itself (what ``include_router`` did before
FastAPI 0.137): the app's router then matches one flat list of plain ``APIRoute`` objects, and the routes, their
dependencies, responses and OpenAPI entries are the same. Nothing else depends on the flat list: what walks the
app's operations (``path_operations`` in app/core/openapi.py, the tests' sweeps) reads FastAPI's own included
routers as well, so going back to ``app.include_router`` is two lines of app/main.py. What this saves is measured
in docs/SCALING.md ("Framework internals, measured"); tests/core/test_routing.py fails when an upgrade changes
what ``include_router`` gives a route that this copy does not.
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
