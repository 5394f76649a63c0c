"""Shared schema pieces: the error body, paging."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorRead(BaseModel):
    """Every error answer except 422 (which keeps FastAPI's validation shape)."""

    detail: str = Field(description="Human-readable explanation; may change, do not match on it.")
    code: str = Field(
        description="Machine-readable reason, stable: branch on this. Each response lists the codes it can carry."
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class PageParams(BaseModel):
    limit: int
    offset: int


async def page_params(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]
