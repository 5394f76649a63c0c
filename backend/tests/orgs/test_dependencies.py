"""Every organization route is guarded by the action it performs: no route states a role of its own."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from app.core.openapi import PathOperation, path_operations
from app.orgs import dependencies


def _calls(dependant: Dependant) -> list[object]:
    found: list[object] = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found.extend(_calls(sub))
    return found


def _guards(route: PathOperation) -> list[str]:
    names = [getattr(call, "__name__", "") for call in _calls(route.dependant)]
    return [name for name in names if name.startswith("authorize_")]


def test_every_org_route_has_one_action_guard(app: FastAPI) -> None:
    routes = [r for r in path_operations(app) if "/organizations/{org_id}" in r.path]
    routes = [r for r in routes if "/admin/" not in r.path]  # /admin is the superusers' (docs/ORGANIZATIONS.md)
    assert len(routes) >= 12
    for route in routes:
        assert len(_guards(route)) == 1, (route.path, route.methods, _guards(route))


def test_leaving_and_removing_share_one_route_guard(app: FastAPI) -> None:
    (route,) = [r for r in path_operations(app) if r.path.endswith("/members/{user_id}") and "DELETE" in r.methods]
    assert _guards(route) == [dependencies.authorize_removal.__name__]
