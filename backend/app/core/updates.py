"""Partial updates (PATCH/PUT bodies) applied from the schema's own fields, never from a hand-kept list."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import Table, bindparam, inspect, update
from sqlalchemy.orm import Mapper

from app.core.data import Query

R = TypeVar("R")


def sent_values(table: type, body: BaseModel, *, handled: Collection[str] = ()) -> dict[str, Any]:
    """Each field of ``body`` the client sent, as the column value to write.

    Every field of the schema must be a column of ``table`` or be in ``handled`` (the caller applies those with a
    rule of its own, e.g. an email change): a field added to the schema and to neither fails here, on every call,
    instead of being accepted and silently dropped. A ``null`` for a column that cannot hold one means
    "unchanged" (``{"is_active": null}``); for a nullable column it clears the value."""
    mapper: Mapper[Any] = inspect(table)
    columns = {attr.key: attr for attr in mapper.column_attrs}
    unapplied = set(type(body).model_fields) - columns.keys() - set(handled)
    if unapplied:
        raise TypeError(f"{type(body).__name__} fields {sorted(unapplied)} are no column of {table.__name__}")
    return {
        key: value
        for key, value in body.model_dump(exclude_unset=True, exclude=set(handled)).items()
        if value is not None or all(column.nullable for column in columns[key].columns)
    }


def changed_values(current: object, values: Mapping[str, Any]) -> dict[str, Any]:
    """Those of ``values`` that differ from ``current`` (a row read under lock): what an audit event records."""
    return {key: value for key, value in values.items() if getattr(current, key) != value}


class Update(Generic[R]):
    """``UPDATE <table> SET <the sent columns> WHERE id = :key RETURNING <returning>``: one ``Query`` per set of
    columns, built and compiled once (a PATCH body sends any subset of its fields). Columns with an ``onupdate``
    (``updated_at``) are set as by any other statement."""

    def __init__(self, table: type, *, returning: Sequence[Any], row: Callable[..., R]) -> None:
        self._table: Table = cast(Table, inspect(table).local_table)
        self._returning = returning
        self._row = row
        self._queries: dict[frozenset[str], Query[R]] = {}

    def __call__(self, key: Any, values: Mapping[str, Any]) -> tuple[Query[R], dict[str, Any]]:
        """The query setting these columns of row ``key``, and its parameters."""
        columns = frozenset(values)
        query = self._queries.get(columns)
        if query is None:
            table = self._table
            statement = (
                update(table)
                .where(table.c.id == bindparam("key"))
                .values({name: bindparam(f"set_{name}") for name in sorted(columns)})
                .returning(*self._returning)
            )
            query = self._queries[columns] = Query(statement, self._row)
        return query, {"key": key, **{f"set_{name}": value for name, value in values.items()}}
