"""Partial updates (PATCH/PUT bodies) applied from the schema's own fields, never from a hand-kept list."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel
from sqlalchemy import inspect


def apply_changes(target: object, body: BaseModel, *, handled: Collection[str] = ()) -> dict[str, Any]:
    """Set on ``target`` (a mapped object) each field of ``body`` the client sent; answer those whose value
    changed, with their new values (what an audit event records).

    Every field of the schema must be a column of ``target`` or be in ``handled`` (the caller applies those
    with a rule of its own, e.g. an email change): a field added to the schema and to neither fails here, on
    every call, instead of being accepted and silently dropped. A ``null`` for a column that cannot hold one
    means "unchanged" (``{"is_active": null}``); for a nullable column it clears the value.
    """
    columns = {column.key: column for column in inspect(type(target)).column_attrs}
    unapplied = set(type(body).model_fields) - columns.keys() - set(handled)
    if unapplied:
        raise TypeError(f"{type(body).__name__} fields {sorted(unapplied)} are no column of {type(target).__name__}")
    changed: dict[str, Any] = {}
    for key, value in body.model_dump(exclude_unset=True, exclude=set(handled)).items():
        if value is None and not all(column.nullable for column in columns[key].columns):
            continue
        if getattr(target, key) != value:
            setattr(target, key, value)
            changed[key] = value
    return changed
