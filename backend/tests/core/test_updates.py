"""Partial updates are applied from the schema's fields: none is dropped silently (app/core/updates.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from app.admin.schemas import AdminUserUpdate
from app.core.schemas import StrictModel
from app.core.updates import changed_values, sent_values
from app.orgs.models import Organization
from app.orgs.schemas import OrgUpdate
from app.users.models import Profile, User
from app.users.schemas import ProfileUpdate


@dataclass(frozen=True)
class _Current:
    full_name: str | None = "Ada"
    is_active: bool = True
    is_superuser: bool = False


class TestSentValues:
    def test_only_sent_fields_and_changed_ones_answered(self) -> None:
        values = sent_values(User, AdminUserUpdate.model_validate({"is_active": False, "full_name": "Ada"}))
        assert values == {"is_active": False, "full_name": "Ada"}
        assert changed_values(_Current(), values) == {"is_active": False}  # full_name was sent but is unchanged

    def test_null_clears_a_nullable_column(self) -> None:
        values = sent_values(User, AdminUserUpdate.model_validate({"full_name": None}))
        assert values == {"full_name": None} and changed_values(_Current(), values) == {"full_name": None}

    def test_null_leaves_a_required_column_unchanged(self) -> None:
        assert sent_values(Organization, OrgUpdate.model_validate({"name": None, "slug": "acme-2"})) == {
            "slug": "acme-2"
        }

    def test_urls_are_stored_as_the_string_answered(self) -> None:
        values = sent_values(Profile, ProfileUpdate.model_validate({"avatar_url": "https://example.com/a.png"}))
        assert values == {"avatar_url": "https://example.com/a.png"}

    def test_a_field_that_is_no_column_fails_loudly(self) -> None:
        class ProfileUpdateWithMore(ProfileUpdate):
            nickname: str | None = None

        with pytest.raises(TypeError, match=r"\['nickname'\]"):
            sent_values(Profile, ProfileUpdateWithMore())  # even when the new field is not sent

    def test_handled_fields_are_left_to_the_caller(self) -> None:
        class WithEmail(StrictModel):  # UserUpdate has no email (it changes in two confirmed steps)
            full_name: str | None = None
            email: str | None = None

        assert sent_values(User, WithEmail.model_validate({"email": "b@example.com"}), handled={"email"}) == {}

    def test_an_unhandled_unknown_field_is_named(self) -> None:
        class Odd(StrictModel):
            colour: str = "blue"

        with pytest.raises(TypeError, match="Odd fields"):
            sent_values(User, Odd())


def test_an_update_query_is_built_once_per_set_of_columns() -> None:
    from app.users import service as user_service

    update = user_service._UPDATE_PROFILE
    first, params = update(uuid.uuid4(), {"full_name": "A"})
    again, _ = update(uuid.uuid4(), {"full_name": "B"})
    other, _ = update(uuid.uuid4(), {"full_name": "A", "avatar_url": None})
    assert first is again and other is not first
    assert params["set_full_name"] == "A" and "key" in params
