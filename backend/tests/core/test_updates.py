"""Partial updates are applied from the schema's fields: none is dropped silently."""

from __future__ import annotations

import uuid

import pytest

from app.admin.schemas import AdminUserUpdate
from app.core.schemas import StrictModel
from app.core.updates import apply_changes
from app.orgs.models import Organization
from app.orgs.schemas import OrgUpdate
from app.users.models import Profile, User
from app.users.schemas import ProfileUpdate


def _user() -> User:
    return User(id=uuid.uuid4(), email="a@example.com", full_name="Ada", is_active=True, is_superuser=False)


class TestApplyChanges:
    def test_only_sent_fields_are_applied_and_changed_ones_answered(self) -> None:
        user = _user()
        changed = apply_changes(user, AdminUserUpdate.model_validate({"is_active": False, "full_name": "Ada"}))
        assert changed == {"is_active": False}  # full_name was sent but is unchanged
        assert user.is_active is False and user.is_superuser is False and user.full_name == "Ada"

    def test_null_clears_a_nullable_column(self) -> None:
        user = _user()
        assert apply_changes(user, AdminUserUpdate.model_validate({"full_name": None})) == {"full_name": None}
        assert user.full_name is None

    def test_null_leaves_a_required_column_unchanged(self) -> None:
        org = Organization(name="Acme", slug="acme")
        assert apply_changes(org, OrgUpdate.model_validate({"name": None, "slug": "acme-2"})) == {"slug": "acme-2"}
        assert org.name == "Acme"

    def test_urls_are_stored_as_the_string_answered(self) -> None:
        profile = Profile(id=uuid.uuid4(), full_name=None, avatar_url=None, credits=0)
        apply_changes(profile, ProfileUpdate.model_validate({"avatar_url": "https://example.com/a.png"}))
        assert profile.avatar_url == "https://example.com/a.png"

    def test_a_field_that_is_no_column_fails_loudly(self) -> None:
        class ProfileUpdateWithMore(ProfileUpdate):
            nickname: str | None = None

        profile = Profile(id=uuid.uuid4(), full_name=None, avatar_url=None, credits=0)
        with pytest.raises(TypeError, match=r"\['nickname'\]"):
            apply_changes(profile, ProfileUpdateWithMore())  # even when the new field is not sent

    def test_handled_fields_are_left_to_the_caller(self) -> None:
        class WithEmail(StrictModel):  # UserUpdate has no email (it changes in two confirmed steps)
            full_name: str | None = None
            email: str | None = None

        user = _user()
        changed = apply_changes(user, WithEmail.model_validate({"email": "b@example.com"}), handled={"email"})
        assert changed == {} and user.email == "a@example.com"

    def test_an_unhandled_unknown_field_is_named(self) -> None:
        class Odd(StrictModel):
            colour: str = "blue"

        with pytest.raises(TypeError, match="Odd fields"):
            apply_changes(_user(), Odd())
