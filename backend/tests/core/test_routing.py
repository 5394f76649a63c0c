"""Routers are added as flat route lists (app/core/routing.py): same paths and behaviour, no nested matchers."""

from __future__ import annotations

import inspect
import re

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from app.api import API_ROUTERS
from app.core.routing import PrefixCheckedRoute, include_flat
from app.state import state_of


@pytest.mark.asyncio
async def test_every_route_is_on_the_app_itself(app: FastAPI) -> None:
    prefix = state_of(app).settings.API_V1_PREFIX
    own = {(r.path, frozenset(r.methods or ())) for r in app.router.routes if isinstance(r, APIRoute)}
    for router in API_ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert (prefix + route.path, frozenset(route.methods or ())) in own
    # Only plain route types: no included-router wrapper is walked per request.
    assert all(type(r) in {APIRoute, PrefixCheckedRoute, Route, Mount} for r in app.router.routes)
    api = [r for r in app.router.routes if isinstance(r, APIRoute) and r.path.startswith(prefix)]
    assert api and all(type(r) is PrefixCheckedRoute for r in api)


def _sample_paths(app: FastAPI) -> set[str]:
    """Each route's path with its parameters filled in, and near misses around it."""
    paths: set[str] = {"/", "/api", "/api/v1", "/api/v1/", "/nope"}
    for route in app.router.routes:
        filled = re.sub(r"\{[^}]+\}", "3fa85f64-5717-4562-b3fc-2c963f66afa6", getattr(route, "path", "/"))
        paths |= {filled, filled + "/", filled + "/extra", filled[:-1], filled.upper()}
    return paths


def test_the_prefix_check_matches_exactly_what_the_full_matcher_matches(app: FastAPI) -> None:
    routes = [r for r in app.router.routes if isinstance(r, PrefixCheckedRoute)]
    checked = 0
    for path in _sample_paths(app):
        for root_path in ("", "/behind-proxy"):
            for method in ("GET", "POST", "DELETE"):
                scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path}
                for route in routes:
                    assert route.matches(dict(scope)) == APIRoute.matches(route, dict(scope)), (route.path, scope)
                    checked += 1
    assert checked > 10_000


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


def test_refuses_what_it_cannot_copy() -> None:
    router = APIRouter()
    router.include_router(APIRouter())
    with pytest.raises(TypeError):
        include_flat(FastAPI(), router)


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
    found = {
        (route.path, name)
        for route in app.router.routes
        if isinstance(route, APIRoute)
        for name in _threadpool_dependencies(route.dependant)
    }
    assert found == set()
