"""Routers are added as flat route lists (app/core/routing.py): same paths and behaviour, no nested matchers."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from app.api import API_ROUTERS
from app.core.routing import include_flat


@pytest.mark.asyncio
async def test_every_route_is_on_the_app_itself(app: FastAPI) -> None:
    prefix = app.state.settings.API_V1_PREFIX
    own = {(r.path, frozenset(r.methods)) for r in app.router.routes if isinstance(r, APIRoute)}
    for router in API_ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert (prefix + route.path, frozenset(route.methods)) in own
    # Only the app's own route types: no included-router wrapper is walked per request.
    assert {type(r).__module__.split(".")[0] for r in app.router.routes} <= {"fastapi", "starlette"}
    assert all(type(r).__name__ in {"APIRoute", "Route", "Mount"} for r in app.router.routes)


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
