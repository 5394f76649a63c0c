"""Routers are added as flat route lists (app/core/routing.py): same operations as FastAPI's own
``include_router`` gives, no nested matcher walked per request.

Everything that sweeps the app's operations (the OpenAPI error answers, the route-protection sweep, the org-guard
test, the drift check) walks them with ``path_operations`` (app/core/openapi.py), which reads FastAPI's own included
routers as well as the flat list: these tests fail when an upgrade changes what it finds, instead of letting those
sweeps pass over nothing.
"""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import Mount, Route

from app.api import API_ROUTERS
from app.core.openapi import path_operations
from app.core.routing import include_flat
from app.state import state_of


def test_every_route_is_on_the_app_itself(app: FastAPI) -> None:
    prefix = state_of(app).settings.API_V1_PREFIX
    own = {(r.path, frozenset(r.methods or ())) for r in app.router.routes if isinstance(r, APIRoute)}
    for router in API_ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert (prefix + route.path, frozenset(route.methods or ())) in own
    # Only plain route types: no included-router wrapper is walked per request.
    assert all(type(r) in {APIRoute, Route, Mount} for r in app.router.routes)


# What serving a route and documenting it read from it (FastAPI 0.165: the fields an inclusion resolves).
_SERVED = (
    "path_format",
    "methods",
    "name",
    "status_code",
    "response_class",
    "response_model",
    "tags",
    "responses",
    "deprecated",
    "include_in_schema",
    "unique_id",
    "operation_id",
    "max_body_size",
    "strict_content_type",
    "summary",
    "description",
    "response_description",
    "callbacks",
    "openapi_extra",
    "response_model_include",
    "response_model_exclude",
    "response_model_by_alias",
    "response_model_exclude_unset",
    "response_model_exclude_defaults",
    "response_model_exclude_none",
    "is_sse_stream",
    "is_json_stream",
    "stream_item_type",
)


def _calls(dependant: Dependant) -> list[Any]:
    return [dependant.call, *(call for sub in dependant.dependencies for call in _calls(sub))]


def _served(context: RouteContext) -> tuple[Any, ...]:
    return (*(getattr(context, name) for name in _SERVED), _calls(context.dependant))


def test_the_copies_are_what_include_router_gives() -> None:
    """Each of this app's routers, flat and through FastAPI's own ``include_router``: the same operations, field
    by field and dependency by dependency, and the same document."""
    flat, nested = FastAPI(), FastAPI()
    for router in API_ROUTERS:
        include_flat(flat, router, prefix="/api/v1")
        nested.include_router(router, prefix="/api/v1")
    copies = [_served(c) for c in iter_route_contexts(flat.routes) if isinstance(c.original_route, APIRoute)]
    included = [_served(c) for c in iter_route_contexts(nested.routes) if isinstance(c.original_route, APIRoute)]
    assert len(copies) > 30
    assert copies == included
    assert flat.openapi() == nested.openapi()


@pytest.mark.asyncio
async def test_prefix_dependencies_and_methods_carry_over() -> None:
    calls: list[str] = []

    def guard() -> None:
        calls.append("guard")

    router = APIRouter(prefix="/things", tags=["things"], dependencies=[Depends(guard)])

    @router.get("/{thing_id}", status_code=203, operation_id="thing-get")
    async def read(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    flat = FastAPI()
    include_flat(flat, router, prefix="/api")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=flat), base_url="http://t") as client:
        ok = await client.get("/api/things/7")
        assert (ok.status_code, ok.json(), calls) == (203, {"id": 7}, ["guard"])
        assert (await client.post("/api/things/7")).status_code == 405
        assert (await client.get("/api/things/seven")).status_code == 422
        assert (await client.get("/things/7")).status_code == 404
    operation = flat.openapi()["paths"]["/api/things/{thing_id}"]["get"]
    assert (operation["operationId"], operation["tags"]) == ("thing-get", ["things"])
    nested = FastAPI()
    nested.include_router(router, prefix="/api")  # FastAPI's own: the same document
    assert flat.openapi() == nested.openapi()


def test_refuses_what_it_cannot_copy() -> None:
    router = APIRouter()
    router.include_router(APIRouter())
    with pytest.raises(TypeError):
        include_flat(FastAPI(), router)


def test_the_walk_finds_every_operation_the_document_lists(app: FastAPI) -> None:
    prefix = state_of(app).settings.API_V1_PREFIX
    walked = {(route.path, method.lower()) for route in path_operations(app) for method in route.methods}
    documented = {(path, method) for path, item in app.openapi()["paths"].items() for method in item}
    assert documented and documented <= walked
    routers = {
        (prefix + r.path, m.lower())
        for router in API_ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute)
        for m in r.methods or ()
    }
    assert routers <= walked
    assert len([path for path, _ in walked if path.startswith(prefix + "/")]) == len(routers)


@pytest.mark.asyncio
async def test_the_walk_merges_what_an_inclusion_adds() -> None:
    """FastAPI's own ``include_router`` (what app.main would call without app/core/routing.py): prefix and
    dependencies of each inclusion, nested ones too, as the request sees them."""
    calls: list[str] = []

    async def outer() -> None:
        calls.append("outer")

    async def inner() -> None:
        calls.append("inner")

    router = APIRouter(prefix="/things", dependencies=[Depends(inner)])

    @router.get("/{thing_id}", status_code=203)
    async def read(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    parent = APIRouter()
    parent.include_router(router, prefix="/v2")
    app = FastAPI()
    app.include_router(parent, prefix="/api", dependencies=[Depends(outer)])

    (operation,) = path_operations(app)
    assert (operation.path, operation.methods, operation.endpoint) == (
        "/api/v2/things/{thing_id}",
        frozenset({"GET"}),
        read,
    )
    assert [d.call for d in operation.dependant.dependencies] == [outer, inner]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ok = await client.get("/api/v2/things/7")
    assert (ok.status_code, ok.json(), calls) == (203, {"id": 7}, ["outer", "inner"])


def _threadpool_dependencies(dependant: Dependant) -> set[str]:
    """The dependencies FastAPI would run in its threadpool: plain functions and classes (not coroutines)."""
    found: set[str] = set()
    for sub in dependant.dependencies:
        call = sub.call
        if call is not None and not (
            inspect.iscoroutinefunction(call)
            or inspect.isasyncgenfunction(call)
            or inspect.iscoroutinefunction(type(call).__call__)  # a callable instance
        ):
            found.add(getattr(call, "__qualname__", repr(call)))
        found |= _threadpool_dependencies(sub)
    return found


def test_no_dependency_takes_a_trip_through_the_threadpool(app: FastAPI) -> None:
    """A plain ``def`` dependency runs in a worker thread: two hand-offs per request for a function that never
    blocks."""
    found = {(route.path, name) for route in path_operations(app) for name in _threadpool_dependencies(route.dependant)}
    assert found == set()
