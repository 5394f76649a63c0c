"""``GET /admin/users?search=``: a case-insensitive substring of the email or the name, served by trigram indexes.

On PostgreSQL both columns have a trigram GIN index (``pg_trgm``). Searching one ``ILIKE`` through it, GIN
takes the rarest trigram of the text and, at each row holding it, looks every other trigram up in its posting
list; trigrams that almost every email has (a shared domain or prefix: ``use`` of ``user4242`` on a million
``user<N>@example.com``) then cost a walk of a posting list as long as the table. So the email side asks for
3-character pieces of the text instead, each its own ``LIKE`` and its own GIN scan key (GIN intersects separate
keys by skipping ahead in each posting list) and leaves out the pieces that most emails contain (they narrow
nothing and cost a look-up per candidate); once one is left out, the exact substring is tested on the rows
the others leave, outside the index. docs/SCALING.md has the measurements.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import ColumnElement, String, and_, bindparam, or_, text

from app.core.data import Data, Query, scalar
from app.state import state_of
from app.users.models import User

LIKE_ESCAPE = "\\"
PIECE = 3  # pg_trgm's trigram length
MAX_PIECES = 8
COMMON_SHARE = 0.5  # a piece in more than this share of the sampled emails is not an index key
_ASCII_RUNS = re.compile(r"[A-Za-z0-9]+")


def like_pattern(text: str) -> str:
    """``%text%`` with the LIKE wildcards of ``text`` taken literally."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
    return f"%{escaped}%"


def email_pieces(text: str) -> list[str]:
    """3-character pieces of ``text`` that every email matching it contains verbatim (none when fewer than two:
    one adds nothing to the trigrams of the exact test).

    Each ASCII letter/digit run of the text, lower-cased, is cut into consecutive pieces (plus its last three
    characters when the length is not a multiple of three). Stored emails are lower-case (API.md), so an email
    containing the text case-insensitively contains each piece as it is.
    """
    pieces: list[str] = []
    for run in _ASCII_RUNS.findall(text):
        run = run.lower()
        starts = list(range(0, len(run) - PIECE + 1, PIECE))
        if starts and starts[-1] + PIECE < len(run):
            starts.append(len(run) - PIECE)
        for start in starts:
            if (piece := run[start : start + PIECE]) not in pieces:
                pieces.append(piece)
    return pieces if len(pieces) >= 2 else []


def email_keys(text: str, sample: Sequence[str] = ()) -> tuple[list[str], bool]:
    """The pieces the email index looks up, and whether the exact ``ILIKE`` is a scan key too.

    Pieces that more than ``COMMON_SHARE`` of the ``sample`` of emails contain are left out (they narrow
    nothing and cost a look-up per candidate), then the rest thinned out to ``MAX_PIECES``, evenly spread. The
    exact test stays a scan key while none of the pieces was common: its trigrams narrow the candidates further
    and it saves a filter that re-tests every candidate, name matches included (measured in docs/SCALING.md).
    Once a common piece is left out, the exact test's
    trigrams hold it too, and it is tested on the rows the pieces leave instead.
    """
    pieces = email_pieces(text)
    most = COMMON_SHARE * len(sample)
    keys = [piece for piece in pieces if sum(piece in email for email in sample) <= most]
    some_common = len(keys) < len(pieces)
    if len(keys) > MAX_PIECES:
        step = (len(keys) - 1) / (MAX_PIECES - 1)
        keys = [keys[round(i * step)] for i in range(MAX_PIECES)]
    return keys, not (keys and some_common)


@dataclass(frozen=True, slots=True)
class UserSearch:
    """One search: the shape of its statement (``user_matches``) and the values it is run with."""

    pieces: tuple[str, ...]  # the email index's keys (``email_keys``)
    exact_is_key: bool
    pattern: str  # ``like_pattern`` of the text

    @property
    def shape(self) -> tuple[int, bool]:
        """What the statement depends on: how many pieces, and whether the exact test is an index key."""
        return len(self.pieces), self.exact_is_key

    def params(self) -> dict[str, str]:
        """The values of ``user_matches(*self.shape)``: ``piece_0`` ... and ``pattern``."""
        return {"pattern": self.pattern, **{f"piece_{i}": f"%{piece}%" for i, piece in enumerate(self.pieces)}}


def user_search(text: str, sample: Sequence[str] = ()) -> UserSearch:
    """``text`` as a search: its index keys given the ``sample`` of emails, and its pattern."""
    pieces, exact_is_key = email_keys(text, sample)
    return UserSearch(tuple(pieces), exact_is_key, like_pattern(text))


def user_matches(pieces: int, exact_is_key: bool) -> ColumnElement[bool]:
    """The search's condition (values: ``UserSearch.params``): a case-insensitive substring of the email or name.

    The email side: ``pieces`` plain ``LIKE``s (each its own GIN scan key), and the exact ``ILIKE`` last (GIN
    takes the keys in this order, and a first key with several trigrams would drive the scan), or, when common
    pieces were left out (not ``exact_is_key``), the exact ``ILIKE`` on ``email || ''``: not the indexed
    expression, so a filter on the rows the pieces leave. The name side is one ``ILIKE`` (names are not
    lower-cased). The pieces hold no wildcard (letters and digits), so they need no escape.
    """
    pattern = bindparam("pattern", type_=String)
    exact = User.email if exact_is_key else User.email.concat("")
    keys = (User.email.like(bindparam(f"piece_{i}", type_=String)) for i in range(pieces))
    email = and_(*keys, exact.ilike(pattern, escape=LIKE_ESCAPE))
    return or_(email, User.full_name.ilike(pattern, escape=LIKE_ESCAPE))


class EmailSample:
    """PostgreSQL's own sample of ``users.email``: the histogram its planner estimates ``LIKE`` with.

    Emails are unique, so the histogram (up to ``default_statistics_target`` + 1 emails spread over the sorted
    column) is the whole sample. It changes when the table is analyzed; it is re-read at most every
    ``REFRESH_SECONDS``. Empty before the first ``ANALYZE`` and on SQLite (no trigram index there): every piece
    is then kept. Which pieces are keys never changes an answer, only its cost.
    """

    REFRESH_SECONDS = 600.0

    def __init__(self) -> None:
        self._emails: tuple[str, ...] = ()
        self._read_at = -math.inf

    async def emails(self, data: Data) -> tuple[str, ...]:
        now = time.monotonic()
        if now - self._read_at >= self.REFRESH_SECONDS:
            self._read_at = now
            self._emails = await self._read(data)
        return self._emails

    @staticmethod
    async def _read(data: Data) -> tuple[str, ...]:
        if data.engine.dialect.name != "postgresql":
            return ()
        return tuple(await data.value(_HISTOGRAM) or ())


_HISTOGRAM = Query(
    text(
        "SELECT histogram_bounds::text::text[] FROM pg_stats WHERE schemaname = current_schema() "
        "AND tablename = :table AND attname = 'email' AND NOT inherited"
    ).bindparams(table=User.__tablename__),
    scalar,
)


async def email_sample(request: Request) -> EmailSample:
    """The app's ``EmailSample`` (per app: two apps in one process may serve different databases)."""
    return state_of(request.app).email_sample
