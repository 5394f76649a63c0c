"""The account lifecycle: GET /users/me/export and DELETE /users/me (app/users/lifecycle.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth.models import AuthSession, EmailToken, EmailTokenPurpose, MfaChallenge, MfaFactor, MfaRecoveryCode
from app.core.data import Tx
from app.core.db import utcnow
from app.credits.models import CreditTransaction
from app.orgs import service as org_service
from app.orgs.exceptions import SoleOwnerError
from app.orgs.models import ApiKey, Invitation, Membership, Organization, OrgRole
from app.orgs.policy import Actor
from app.state import state_of
from app.users import lifecycle
from app.users import service as user_service
from app.users.models import DeletedSupabaseIdentity, Profile, User
from app.users.schemas import AccountExport
from tests import supabase_tokens
from tests.auth.mfa_helpers import enable_mfa
from tests.conftest import client_for, requires_postgres
from tests.factories import TestUser as AUser
from tests.factories import create_user, load_user, unique_email
from tests.orgs.helpers import add_membership, make_invitation, make_org, member_of, owner_count, roles
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, bearer, claims, mint

pytestmark = pytest.mark.asyncio
jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

ME = "/api/v1/users/me"
EXPORT = "/api/v1/users/me/export"
ORGS = "/api/v1/organizations"


async def count(app: FastAPI, model: Any, *where: Any) -> int:
    async with state_of(app).sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def spend(client: httpx.AsyncClient, user: AUser, n: int) -> None:
    for i in range(n):
        response = await client.post(
            "/api/v1/credits/spend", json={"amount": 1, "reason": f"item {i}"}, headers=user.headers
        )
        assert response.status_code == 200, response.text


async def delete_me(client: httpx.AsyncClient, user: AUser, password: str | None = None) -> httpx.Response:
    body = {"current_password": user.password if password is None else password}
    return await client.request("DELETE", ME, json=body, headers=user.headers)


async def events(app: FastAPI, *where: Any) -> list[AuditEvent]:
    async with state_of(app).sessionmaker() as session:
        return list(await session.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.created_at)))


# --- export -----------------------------------------------------------------------------------------------


class TestExport:
    async def test_ok_document(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, full_name="Ada Lovelace")
        other = await create_user(app)
        org_id = await make_org(app, other)
        await add_membership(app, org_id, user.id, OrgRole.ADMIN)
        await make_invitation(app, org_id, user.id, email=unique_email("invitee"))
        await spend(client, user, 3)
        key = await client.post(
            f"{ORGS}/{org_id}/api-keys", json={"name": "ci", "role": "member"}, headers=user.headers
        )
        assert key.status_code == 201, key.text
        response = await client.get(EXPORT, headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment; filename=") and str(user.id) in disposition
        assert response.headers["cache-control"] == "no-store"
        document = AccountExport.model_validate(response.json())  # the documented shape, no extra field
        assert document.user.id == user.id and document.user.email == user.email
        assert document.profile is not None and document.profile.credits == 997
        assert [m.org_id for m in document.memberships] == [org_id]
        assert document.memberships[0].role == "admin"
        assert len(document.invitations_sent) == 1
        assert [entry.amount for entry in document.credit_ledger] == [1000, -1, -1, -1]  # oldest first
        assert [s.id for s in document.sessions] == [user.session_id]
        assert [k.id for k in document.api_keys_created] == [uuid.UUID(key.json()["id"])]
        assert key.json()["key"] not in response.text
        actions = [event.action for event in document.audit_events]
        assert "auth.login" in actions and actions.count("credits.spent") == 3
        assert "member.added" not in actions or all(
            e.actor_id == user.id or e.subject_user_id == user.id for e in document.audit_events
        )

    async def test_no_secret_hash_or_token(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, codes = await enable_mfa(client, app, user)
        async with state_of(app).sessionmaker() as session:
            row = await session.get(User, user.id)
            assert row is not None and row.hashed_password is not None
            auth_session = await session.get(AuthSession, user.session_id)
            assert auth_session is not None
            factor = await session.get(MfaFactor, user.id)
            assert factor is not None
            code_hashes = list(await session.scalars(select(MfaRecoveryCode.code_hash)))
            forbidden = [row.hashed_password, auth_session.token_salt, factor.secret_encrypted, *code_hashes]
        token = await auth_service_token(app, user)
        response = await client.get(EXPORT, headers=user.headers)
        assert response.status_code == 200
        text = response.text
        for value in [secret, *codes, *forbidden, user.access_token, user.refresh_token, token]:
            assert value not in text
        for key in ("hashed_password", "token_salt", "token_hash", "code_hash", "secret", "request_hash"):
            assert f'"{key}"' not in text
        document = AccountExport.model_validate_json(text)
        assert document.mfa.enabled and document.mfa.recovery_codes_left == 10

    async def test_keyset_pages_cover_ties_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """Rows sharing a created_at are neither lost nor repeated across pages."""
        user = await create_user(app, profile=False)
        same = utcnow() - timedelta(days=1)
        async with state_of(app).sessionmaker() as session:
            session.add_all(
                CreditTransaction(user_id=user.id, amount=i, balance_after=i, reason="tie", created_at=same)
                for i in range(7)
            )
            await session.commit()
        chunks = [chunk async for chunk in lifecycle.export_document(state_of(app).engine, user.id, batch=2)]
        assert len(chunks) > 8  # the ledger came in pages of two
        document = AccountExport.model_validate_json(b"".join(chunks))
        assert sorted(entry.amount for entry in document.credit_ledger) == list(range(7))
        assert len({entry.id for entry in document.credit_ledger}) == 7
        assert document.profile is None

    async def test_audit_events_actor_and_subject_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        user = await create_user(app)
        org_id = await make_org(app, owner)
        response = await client.post(
            f"{ORGS}/{org_id}/members", json={"email": user.email, "role": "member"}, headers=owner.headers
        )
        assert response.status_code == 201
        document = AccountExport.model_validate((await client.get(EXPORT, headers=user.headers)).json())
        ids = [event.id for event in document.audit_events]
        assert len(ids) == len(set(ids))
        added = [event for event in document.audit_events if event.action == "member.added"]
        assert [(e.actor_id, e.subject_user_id) for e in added] == [(owner.id, user.id)]

    async def test_unauthenticated_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(EXPORT)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    async def test_supabase_user(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        token = mint(claims(issuer=jwks_server.issuer))
        async with client_for(application) as c:
            response = await c.get(EXPORT, headers=bearer(token))
            assert response.status_code == 200, response.text
            document = AccountExport.model_validate(response.json())
        assert document.user.auth_provider == "supabase" and document.sessions == []


async def auth_service_token(app: FastAPI, user: AUser) -> str:
    """A pending email-change token of the user (only its hash is stored; it must not be exported)."""
    async with state_of(app).data.transaction() as tx:
        row = await user_service.find_user(tx, user.id)
        assert row is not None
        return await auth_service.create_email_token(
            tx, state_of(app).settings, user=row, purpose=EmailTokenPurpose.EMAIL_CHANGE, email=unique_email()
        )


# --- deletion ---------------------------------------------------------------------------------------------


class TestDeleteMe:
    async def test_ok_deletes_everything_theirs(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        second = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
        assert second.status_code == 200
        await auth_service_token(app, user)
        solo = await make_org(app, user, name="Solo")
        other_owner = await create_user(app)
        shared = await make_org(app, other_owner, name="Shared")
        await add_membership(app, shared, user.id, OrgRole.ADMIN)
        invitation_id, _ = await make_invitation(app, shared, user.id, email=unique_email("inv"))
        key = await client.post(
            f"{ORGS}/{shared}/api-keys", json={"name": "ci", "role": "member"}, headers=user.headers
        )
        assert key.status_code == 201, key.text
        await spend(client, user, 2)
        async with state_of(app).sessionmaker() as session:
            session.add(MfaChallenge(user_id=user.id, expires_at=utcnow() + timedelta(minutes=5)))
            await session.commit()

        response = await delete_me(client, user)
        assert response.status_code == 204, response.text
        assert response.content == b""

        assert await load_user(app, user.id) is None
        for model, where in [
            (Profile, Profile.id == user.id),
            (AuthSession, AuthSession.user_id == user.id),
            (EmailToken, EmailToken.user_id == user.id),
            (MfaChallenge, MfaChallenge.user_id == user.id),
            (Membership, Membership.user_id == user.id),
            (CreditTransaction, CreditTransaction.user_id == user.id),
            (Invitation, Invitation.id == invitation_id),
            (Organization, Organization.id == solo),
            (ApiKey, ApiKey.created_by == user.id),
        ]:
            assert await count(app, model, where) == 0, model
        assert await count(app, Organization, Organization.id == shared) == 1
        assert await roles(app, shared) == {other_owner.id: "owner"}

        # Every token of the user is dead at once.
        assert (await client.get(ME, headers=user.headers)).status_code == 401
        assert (await client.get(ME, headers=bearer(second.json()["access_token"]))).status_code == 401
        refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert refresh.status_code == 401
        assert (await client.get(f"{ORGS}/{shared}", headers=bearer(key.json()["key"]))).status_code == 401
        login = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
        assert login.status_code == 401 and login.json()["code"] == "invalid_credentials"

        # The audit log keeps the events, without the address.
        kept = await events(app, (AuditEvent.actor_id == user.id) | (AuditEvent.subject_user_id == user.id))
        assert {"auth.login", "credits.spent", "user.deleted"} <= {event.action for event in kept}
        assert all(user.email not in json.dumps(event.details) for event in kept)
        [deleted] = [event for event in kept if event.action == "user.deleted"]
        assert (deleted.actor_id, deleted.subject_user_id) == (user.id, user.id)
        assert deleted.details["deleted_org_ids"] == [str(solo)]
        assert deleted.details["sessions_ended"] == 2

    async def test_every_address_of_theirs_is_erased(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        email = unique_email("erase")
        failed = await client.post("/api/v1/auth/login", json={"email": email, "password": "whatever-123"})
        assert failed.status_code == 401  # an event naming the address, before it had an account
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        await make_invitation(app, org_id, owner.id, email=email)  # invited before registering
        user = await create_user(app, email=email)
        response = await delete_me(client, user)
        assert response.status_code == 204
        everything = await events(app)
        assert everything and all(email not in json.dumps(event.details) for event in everything)
        [invited] = [event for event in everything if event.action == "invitation.created"]
        assert invited.details["email"] == "[deleted]" and invited.details["role"] == "member"

    async def test_wrong_password_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await delete_me(client, user, password="not-the-password-1")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_credentials"
        assert response.headers["www-authenticate"] == "Bearer"
        assert await load_user(app, user.id) is not None
        assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert [e.action for e in await events(app, AuditEvent.action == "user.delete_failed")] == [
            "user.delete_failed"
        ]

    @pytest.mark.parametrize("body", [None, {}])
    async def test_without_password_401(
        self, client: httpx.AsyncClient, app: FastAPI, body: dict[str, Any] | None
    ) -> None:
        user = await create_user(app)
        response = await client.request("DELETE", ME, json=body, headers=user.headers)
        assert response.status_code == 401
        assert response.json()["code"] == "reauthentication_required"
        assert await load_user(app, user.id) is not None

    @pytest.mark.parametrize(
        "body",
        [{"current_password": ""}, {"current_password": 5}, {"password": "x"}, {"current_password": "a\x00b"}],
    )
    async def test_bad_body_422(self, client: httpx.AsyncClient, app: FastAPI, body: dict[str, Any]) -> None:
        user = await create_user(app)
        response = await client.request("DELETE", ME, json=body, headers=user.headers)
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
        assert await load_user(app, user.id) is not None

    async def test_unauthenticated_401(self, client: httpx.AsyncClient) -> None:
        response = await client.request("DELETE", ME, json={"current_password": "x"})
        assert response.status_code == 401

    async def test_sole_owner_409_until_transferred(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        org_id = await make_org(app, user)
        member = await member_of(app, org_id, OrgRole.MEMBER)
        response = await delete_me(client, user)
        assert response.status_code == 409
        assert response.json()["code"] == "sole_owner"
        assert await load_user(app, user.id) is not None
        assert await roles(app, org_id) == {user.id: "owner", member.id: "member"}
        transfer = await client.post(
            f"{ORGS}/{org_id}/transfer-ownership", json={"user_id": str(member.id)}, headers=user.headers
        )
        assert transfer.status_code == 200
        assert (await delete_me(client, user)).status_code == 204
        assert await roles(app, org_id) == {member.id: "owner"}

    async def test_co_owner_leaves_the_org_to_the_other(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        org_id = await make_org(app, user)
        co_owner = await member_of(app, org_id, OrgRole.OWNER)
        await member_of(app, org_id, OrgRole.MEMBER)
        assert (await delete_me(client, user)).status_code == 204
        assert await owner_count(app, org_id) == 1 and co_owner.id in await roles(app, org_id)

    async def test_last_superuser_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await create_user(app, is_superuser=True)
        response = await delete_me(client, admin)
        assert response.status_code == 409
        assert response.json()["code"] == "last_superuser"

    async def test_mfa_data_goes(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        assert (await delete_me(client, user)).status_code == 204
        assert await count(app, MfaFactor, MfaFactor.user_id == user.id) == 0
        assert await count(app, MfaRecoveryCode, MfaRecoveryCode.user_id == user.id) == 0

    async def test_email_can_register_again(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        assert (await delete_me(client, user)).status_code == 204
        response = await client.post("/api/v1/auth/register", json={"email": user.email, "password": user.password})
        assert response.status_code == 201
        assert response.json()["id"] != str(user.id)

    async def test_tokens_die_on_every_app_instance(self, app: FastAPI, make_app: Any) -> None:
        """Another instance (its own pools and caches) refuses the token on its very next request."""
        other = await make_app()
        user = await create_user(app)
        async with client_for(app) as one, client_for(other) as two:
            assert (await two.get(ME, headers=user.headers)).status_code == 200  # verified and cached there
            assert (await delete_me(one, user)).status_code == 204
            response = await two.get(ME, headers=user.headers)
            assert response.status_code == 401 and response.json()["code"] == "session_revoked"
            refresh = await two.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
            assert refresh.status_code == 401

    async def test_login_racing_the_deletion_is_no_500(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        login = client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
        results = await asyncio.gather(delete_me(client, user), login)
        assert results[0].status_code == 204
        assert results[1].status_code in {200, 401}, results[1].text


class TestDeleteMeSupabase:
    async def test_fresh_token_deletes_then_old_token_is_refused(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub))
        async with client_for(application) as c:
            assert (await c.get(ME, headers=bearer(token))).status_code == 200  # provisioned
            assert (await c.post("/api/v1/profile", headers=bearer(token))).status_code == 201
            response = await c.request("DELETE", ME, headers=bearer(token))
            assert response.status_code == 204, response.text
            assert await load_user(application, sub) is None
            # The same (still valid) token: refused, and nothing is provisioned again.
            again = await c.get(ME, headers=bearer(token))
            assert again.status_code == 401 and again.json()["code"] == "account_deleted"
            assert (await c.post("/api/v1/profile", headers=bearer(token))).status_code == 401
            assert await load_user(application, sub) is None
            # A token issued after the deletion (the person signed in again): a new, empty account.
            fresh = mint(claims(issuer=jwks_server.issuer, sub=sub, iat=int(time.time()) + 1))  # iat: whole seconds
            response = await c.get(ME, headers=bearer(fresh))
            assert response.status_code == 200, response.text
            assert (await c.get("/api/v1/profile", headers=bearer(fresh))).status_code == 404
            # ... and the old token stays refused even now that an account with its sub exists again.
            assert (await c.get(ME, headers=bearer(token))).json()["code"] == "account_deleted"
        assert await count(application, DeletedSupabaseIdentity, DeletedSupabaseIdentity.supabase_id == sub) == 1

    async def test_stale_token_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        token = mint(claims(issuer=jwks_server.issuer, iat=int(time.time()) - 6 * 60))
        async with client_for(application) as c:
            assert (await c.get(ME, headers=bearer(token))).status_code == 200
            response = await c.request("DELETE", ME, headers=bearer(token))
            assert response.status_code == 401
            assert response.json()["code"] == "reauthentication_required"
            assert (await c.get(ME, headers=bearer(token))).status_code == 200

    async def test_merged_own_account_needs_its_password(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        own = await create_user(application)
        token = mint(claims(issuer=jwks_server.issuer, email=own.email, email_verified=True))
        async with client_for(application) as c:
            assert (await c.get(ME, headers=bearer(token))).status_code == 200  # linked to the own account
            response = await c.request("DELETE", ME, headers=bearer(token))
            assert response.json()["code"] == "reauthentication_required"
            response = await c.request("DELETE", ME, json={"current_password": own.password}, headers=bearer(token))
            assert response.status_code == 204
            assert (await c.get(ME, headers=bearer(token))).json()["code"] == "account_deleted"


# --- races (PostgreSQL: real row locks and parallel transactions) ------------------------------------------


async def _delete_while_held(app: FastAPI, user_id: uuid.UUID, change: Any) -> tuple[bool, BaseException | None]:
    """Run ``change(tx)`` in one transaction and, before it commits, ``delete_account`` in another: was the
    deletion held back until the change committed, and what did it raise?"""
    async with state_of(app).data.transaction() as first:
        await change(first)

        async def delete() -> None:
            async with state_of(app).data.transaction() as second:
                await lifecycle.delete_account(second, user_id=user_id, actor_id=user_id)

        task = asyncio.create_task(delete())
        await asyncio.sleep(0.5)
        held = not task.done()
        await first.commit()
        try:
            await task
        except Exception as exc:  # the outcome is the result
            return held, exc
        return held, None


@requires_postgres()
class TestDeleteMeRaces:
    rounds = 6

    async def test_transfer_in_flight_holds_the_deletion_back(self, app: FastAPI) -> None:
        """An ownership transfer to the user, not yet committed: the deletion waits for it, then sees the user
        as the last owner (409), instead of deleting them from under the new ownership (no owner left)."""
        owner = await create_user(app, logged_in=False)
        org_id = await make_org(app, owner)
        user = await member_of(app, org_id, OrgRole.ADMIN, logged_in=False)
        await member_of(app, org_id, OrgRole.MEMBER, logged_in=False)

        async def transfer(tx: Tx) -> None:
            actor = Actor(org_id=org_id, user_id=owner.id, role=OrgRole.OWNER)
            await org_service.transfer_ownership(tx, actor=actor, user_id=user.id)

        held, error = await _delete_while_held(app, user.id, transfer)
        assert held
        assert isinstance(error, SoleOwnerError)
        current = await roles(app, org_id)
        assert (current[owner.id], current[user.id]) == ("admin", "owner")
        assert await owner_count(app, org_id) == 1

    async def test_other_owner_leaving_in_flight_holds_the_deletion_back(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        org_id = await make_org(app, user)
        other = await member_of(app, org_id, OrgRole.OWNER, logged_in=False)
        await member_of(app, org_id, OrgRole.MEMBER, logged_in=False)

        async def leave(tx: Tx) -> None:
            actor = Actor(org_id=org_id, user_id=other.id, role=OrgRole.OWNER)
            await org_service.remove_member(tx, actor=actor, user_id=other.id)

        held, error = await _delete_while_held(app, user.id, leave)
        assert held
        assert isinstance(error, SoleOwnerError)
        assert await owner_count(app, org_id) == 1

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [("POST", ORGS, {"name": "Late"}), ("POST", "/api/v1/profile", None)],
    )
    async def test_a_write_waiting_on_the_deletion_answers_401(
        self, client: httpx.AsyncClient, app: FastAPI, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        """A request of the user that was already past authentication when the deletion locked the user's row:
        its insert waits for the deletion, then finds the user gone: 401, not a 500, and nothing written."""
        user = await create_user(app, profile=False)
        async with state_of(app).data.transaction() as deleting:
            await lifecycle.delete_account(deleting, user_id=user.id, actor_id=user.id)
            task = asyncio.create_task(client.request(method, path, json=body, headers=user.headers))
            await asyncio.sleep(0.5)
            assert not task.done()  # waiting on the user's row
        response = await task
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "session_revoked"
        assert await count(app, Organization, Organization.name == "Late") == 0
        assert await count(app, Profile, Profile.id == user.id) == 0

    async def test_delete_vs_transfer_of_ownership_to_the_user(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        outcomes = set()
        for _ in range(self.rounds):
            owner = await create_user(app)
            org_id = await make_org(app, owner)
            user = await member_of(app, org_id, OrgRole.ADMIN)
            await member_of(app, org_id, OrgRole.MEMBER, logged_in=False)
            deleted, transferred = await asyncio.gather(
                delete_me(client, user),
                client.post(
                    f"{ORGS}/{org_id}/transfer-ownership", json={"user_id": str(user.id)}, headers=owner.headers
                ),
            )
            pair = (deleted.status_code, transferred.status_code)
            assert pair in {(204, 404), (409, 200)}, (pair, deleted.text, transferred.text)
            outcomes.add(pair)
            assert await owner_count(app, org_id) == 1  # never an organization without an owner
            if deleted.status_code == 409:
                assert deleted.json()["code"] == "sole_owner"
                assert (await roles(app, org_id))[user.id] == "owner"

    async def test_delete_vs_the_other_owner_leaving(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        for _ in range(self.rounds):
            user = await create_user(app)
            org_id = await make_org(app, user)
            other = await member_of(app, org_id, OrgRole.OWNER)
            await member_of(app, org_id, OrgRole.MEMBER, logged_in=False)
            deleted, left = await asyncio.gather(
                delete_me(client, user),
                client.delete(f"{ORGS}/{org_id}/members/{other.id}", headers=other.headers),
            )
            pair = (deleted.status_code, left.status_code)
            assert pair in {(204, 409), (409, 204)}, (pair, deleted.text, left.text)
            assert await owner_count(app, org_id) == 1

    async def test_delete_vs_being_added_to_an_org(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        for _ in range(self.rounds):
            user = await create_user(app)
            owner = await create_user(app)
            org_id = await make_org(app, owner)
            deleted, added = await asyncio.gather(
                delete_me(client, user),
                client.post(
                    f"{ORGS}/{org_id}/members", json={"email": user.email, "role": "member"}, headers=owner.headers
                ),
            )
            assert deleted.status_code == 204
            assert added.status_code in {201, 404, 409}, added.text
            assert await roles(app, org_id) == {owner.id: "owner"}  # no membership of a deleted user


class TestRateLimits:
    async def test_delete_counts_like_a_password_check(self, make_app: Any) -> None:
        application = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_PASSWORD="2/minute")
        user = await create_user(application)
        async with client_for(application) as c:
            statuses = [(await delete_me(c, user, password="wrong-password-1")).status_code for _ in range(3)]
            assert statuses == [401, 401, 429]
            assert (await c.get(ME, headers=user.headers)).status_code == 200  # GET /users/me: its own bucket

    async def test_export_per_user(self, make_app: Any) -> None:
        application = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_EXPORT="1/minute")
        user = await create_user(application)
        async with client_for(application) as c:
            assert (await c.get(EXPORT, headers=user.headers)).status_code == 200
            limited = await c.get(EXPORT, headers=user.headers)
            assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
