"""The unfiltered audit list does not count a huge log row by row: past a size it reports the planner's estimate."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.audit import service as audit_service
from app.state import state_of
from tests.conftest import requires_postgres

pytestmark = [pytest.mark.asyncio, requires_postgres()]


async def test_estimate_used_past_the_threshold(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    async with state_of(app).data.transaction() as tx:
        for index in range(30):
            await audit_service.record(tx, "test.event", details={"n": index})
    async with state_of(app).engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE audit_events"))

    data = state_of(app).data
    events, total = await audit_service.list_events(data, limit=5, offset=0)
    assert total == 30 and len(events) == 5  # small: exact
    monkeypatch.setattr(audit_service, "EXACT_COUNT_UP_TO", 10)
    events, total = await audit_service.list_events(data, limit=5, offset=0)
    assert total == 30 and len(events) == 5  # estimate of an analysed table
    async with state_of(app).data.transaction() as tx:
        for index in range(5):
            await audit_service.record(tx, "test.event", details={"n": 30 + index})
    events, total = await audit_service.list_events(data, limit=5, offset=0)
    assert total == 30  # still the estimate: the table was not analysed since (counted, it would be 35)
    assert (await audit_service.list_events(data, limit=5, offset=0, action="test.event"))[1] == 35  # exact
    filtered_events, filtered_total = await audit_service.list_events(
        data, limit=5, offset=0, action="nothing.like.this"
    )
    assert filtered_total == 0 and filtered_events == []  # filtered lists stay exact
