"""Shared schema pieces: the strict request base, emails, the error body, paging."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Depends, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from app.core.emails import normalize_email

T = TypeVar("T")

# An address in its stored form (app/core/emails.py): the same function keys the per-email rate limits.
Email = Annotated[str, AfterValidator(normalize_email), WithJsonSchema({"type": "string", "format": "email"})]


class StrictModel(BaseModel):
    """Every request body: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refuse it here (422) instead of failing in the database (500).
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


class ErrorRead(BaseModel):
    """Every error answer except 422 (which keeps FastAPI's validation shape)."""

    detail: str = Field(description="Human-readable explanation; may change, do not match on it.")
    code: str = Field(
        description="Machine-readable reason, stable: branch on this. Each response lists the codes it can carry."
    )


class Accepted(BaseModel):
    """A 202 answer: the request is taken; what follows happens later (a mail, say)."""

    status: Literal["accepted"]


ACCEPTED = Accepted(status="accepted")


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
