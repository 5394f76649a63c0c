"""Identity integrity, attacked through the HTTP API (docs/SECURITY.md, "Email ownership and linked
identities"): every path that verifies an email or links two identities, each with the attacker's steps and
the assertion that they end without access.

The attacker here registers (or holds) an account for the victim's address before the victim does, or holds
one of the victim's tokens, and tries to turn that into lasting access.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.auth import service as auth_service
from app.auth.models import AuthSession
from app.core.db import utcnow
from app.integrations.email.sender import EmailSender
from app.users.models import User
from tests import supabase_tokens
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.factories import DEFAULT_PASSWORD, create_user, load_user, unique_email
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, bearer, claims, mint

pytestmark = pytest.mark.asyncio

jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

API = "/api/v1"
ATTACKER_PASSWORD = "Attackers-Own-Passphrase-13"
OWNER_PASSWORD = "Owners-Real-Passphrase-21"


# --- the attacker's tools -------------------------------------------------------------------------------


async def register(client: httpx.AsyncClient, email: str, password: str = ATTACKER_PASSWORD) -> dict[str, Any]:
    response = await client.post(f"{API}/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: httpx.AsyncClient, email: str, password: str = ATTACKER_PASSWORD) -> httpx.Response:
    return await client.post(f"{API}/auth/login", json={"email": email, "password": password})


async def tokens(client: httpx.AsyncClient, email: str, password: str = ATTACKER_PASSWORD) -> dict[str, Any]:
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def auth(pair: dict[str, Any]) -> dict[str, str]:
    return bearer(pair["access_token"])


def mailed_token(app: FastAPI, to: str, path: str) -> str:
    """The token of the last link to ``{FRONTEND_URL}/{path}`` mailed to ``to`` (console backend outbox)."""
    sender: EmailSender = app.state.email_sender
    for mail in reversed(sender.outbox):
        match = re.search(rf"/{path}\?token=([A-Za-z0-9_\-%]+)", mail.text)
        if mail.to == to and match:
            return match.group(1)
    raise AssertionError(f"no {path} mail to {to}")


async def assert_locked_out(
    app: FastAPI, pair: dict[str, Any], *, email: str, password: str = ATTACKER_PASSWORD
) -> None:
    """Whatever the attacker held gives no access any more: access token, refresh token, password."""
    async with client_for(app, client_addr=("203.0.113.66", 4000)) as client:
        me = await client.get(f"{API}/users/me", headers=auth(pair))
        assert me.status_code == 401, me.text
        credits = await client.get(f"{API}/credits", headers=auth(pair))
        assert credits.status_code == 401, credits.text
        refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 401, refreshed.text
        relogin = await login(client, email, password)
        assert relogin.status_code == 401, relogin.text
        assert relogin.json()["code"] == "invalid_credentials"


# --- finding 1: invitation accept --------------------------------------------------------------------------


class TestInvitationAccept:
    async def test_accepting_never_verifies(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        victim = unique_email("victim")
        await register(client, victim)
        squat = await tokens(client, victim)
        inviter = await create_user(app)  # the attacker's second account
        org = await client.post(f"{API}/organizations", json={"name": "Trap"}, headers=inviter.headers)
        invite = await client.post(
            f"{API}/organizations/{org.json()['id']}/invitations",
            json={"email": victim, "role": "member"},
            headers=inviter.headers,
        )
        assert invite.status_code == 201
        accept = await client.post(
            f"{API}/invitations/accept", json={"token": invite.json()["token"]}, headers=auth(squat)
        )
        assert accept.status_code == 200, accept.text  # an unverified invitee may still join
        me = await client.get(f"{API}/users/me", headers=auth(squat))
        assert me.json()["is_verified"] is False

    async def test_pre_account_takeover_through_invitation_then_supabase(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        """The chain found from outside: squat the address, verify it with one's own invitation, wait for the
        real owner's Supabase sign-in to merge into the squatted account, read their ledger."""
        application = await supabase_app()
        victim = unique_email("victim")
        async with client_for(application) as attacker:
            await register(attacker, victim)
            squat = await tokens(attacker, victim)
            await register(attacker, second := unique_email("attacker"))
            inviter = await tokens(attacker, second)
            org = await attacker.post(f"{API}/organizations", json={"name": "Trap"}, headers=auth(inviter))
            invite = await attacker.post(
                f"{API}/organizations/{org.json()['id']}/invitations",
                json={"email": victim, "role": "member"},
                headers=auth(inviter),
            )
            token = invite.json()["token"]
            accepted = await attacker.post(f"{API}/invitations/accept", json={"token": token}, headers=auth(squat))
            assert accepted.status_code == 200
        # The real owner signs in through Supabase, whose token asserts the verified address.
        owner_token = mint(claims(issuer=jwks_server.issuer, email=victim, email_verified=True))
        async with client_for(application) as owner:
            me = await owner.get(f"{API}/users/me", headers=bearer(owner_token))
            assert me.status_code == 200, me.text
            assert me.json()["auth_provider"] == "supabase" and me.json()["is_verified"] is True
            assert (await owner.get(f"{API}/credits", headers=bearer(owner_token))).status_code == 200
        await assert_locked_out(application, squat, email=victim)


# --- finding 2: every spelling of an address meets one counter -----------------------------------------------


def spellings(email: str) -> list[str]:
    local, _, domain = email.partition("@")
    full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in domain.upper())
    return [email, f"{local}@{full_width}", f" {local.upper()}@{domain.upper()} ", f"Victim <{local}@{domain}>"]


class TestPerEmailLimitsUseTheStoredForm:
    async def test_login_guesses_in_other_spellings_hit_the_same_counter(self, make_app: AppFactory) -> None:
        application = await make_app(
            RATE_LIMIT_ENABLED=True, RATE_LIMIT_LOGIN="100/minute", RATE_LIMIT_LOGIN_EMAIL="3/minute"
        )
        victim = await create_user(application, logged_in=False)
        answers = []
        for index, spelling in enumerate(spellings(victim.email)):
            async with client_for(application, client_addr=(f"198.51.100.{index + 1}", 1000)) as client:
                answers.append((await login(client, spelling, "Wrong-Guess-Number-1")).status_code)
        assert answers == [401, 401, 401, 429]

    async def test_full_width_domain_reaches_the_same_account(self, make_app: AppFactory) -> None:
        application = await make_app()
        victim = await create_user(application, logged_in=False)
        async with client_for(application) as client:
            response = await login(client, spellings(victim.email)[1], DEFAULT_PASSWORD)
        assert response.status_code == 200
        assert response.json()["session_id"]

    async def test_full_width_local_part_is_the_same_address(self, client: httpx.AsyncClient) -> None:
        email = unique_email("wide")
        await register(client, email)
        local, _, domain = email.partition("@")
        wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in local.upper())
        again = await client.post(
            f"{API}/auth/register", json={"email": f"{wide}@{domain}", "password": ATTACKER_PASSWORD}
        )
        assert again.status_code == 409 and again.json()["code"] == "email_taken"

    async def test_reset_mails_in_other_spellings_hit_the_same_counter(self, make_app: AppFactory) -> None:
        application = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_EMAIL="2/minute")
        victim = await create_user(application, logged_in=False)
        answers = []
        for index, spelling in enumerate(spellings(victim.email)[:3]):
            async with client_for(application, client_addr=(f"203.0.113.{index + 1}", 1000)) as client:
                response = await client.post(f"{API}/auth/password-reset/request", json={"email": spelling})
                answers.append(response.status_code)
        assert answers == [202, 202, 429]
        sender: EmailSender = application.state.email_sender
        assert len([mail for mail in sender.outbox if mail.to == victim.email]) == 2


# --- finding 3: a deactivated user's tokens -------------------------------------------------------------------


class TestDeactivatedUser:
    async def test_access_and_refresh_tokens_answer_inactive_user(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        admin = await create_user(app, is_superuser=True)
        target = await create_user(app)
        response = await client.patch(
            f"{API}/admin/users/{target.id}", json={"is_active": False}, headers=admin.headers
        )
        assert response.status_code == 200
        me = await client.get(f"{API}/users/me", headers=target.headers)
        assert me.status_code == 401 and me.json()["code"] == "inactive_user"
        assert me.headers["WWW-Authenticate"].startswith("Bearer")
        refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": target.refresh_token})
        assert refreshed.status_code == 401 and refreshed.json()["code"] == "inactive_user"


# --- finding 4: passwords need a non-space character --------------------------------------------------------


BLANK_PASSWORDS = [" " * 8, " " * 40, "\t \u3000 \u00a0  \n"]


class TestBlankPasswords:
    @pytest.mark.parametrize("password", BLANK_PASSWORDS)
    async def test_register_422(self, client: httpx.AsyncClient, password: str) -> None:
        response = await client.post(f"{API}/auth/register", json={"email": unique_email(), "password": password})
        assert response.status_code == 422, response.text
        assert password not in response.text

    @pytest.mark.parametrize("password", BLANK_PASSWORDS)
    async def test_change_422(self, client: httpx.AsyncClient, app: FastAPI, password: str) -> None:
        user = await create_user(app)
        body = {"current_password": DEFAULT_PASSWORD, "new_password": password}
        response = await client.post(f"{API}/auth/password", json=body, headers=user.headers)
        assert response.status_code == 422
        assert (await login(client, user.email, DEFAULT_PASSWORD)).status_code == 200

    async def test_reset_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        response = await client.post(
            f"{API}/auth/password-reset/confirm", json={"token": "x" * 43, "new_password": " " * 12}
        )
        assert response.status_code == 422

    async def test_spaces_around_other_characters_are_fine(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{API}/auth/register", json={"email": unique_email(), "password": "   a quiet blue harbour   "}
        )
        assert response.status_code == 201


# --- finding 6: sessions, paged and capped ---------------------------------------------------------------------


async def live_sessions(app: FastAPI, user_id: uuid.UUID) -> int:
    async with app.state.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None), AuthSession.expires_at > utcnow())
        )
    return int(count or 0)


class TestSessions:
    async def test_paged_newest_first(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        pairs = [await tokens(client, user.email, DEFAULT_PASSWORD) for _ in range(3)]
        first = await client.get(f"{API}/auth/sessions", params={"limit": 2}, headers=auth(pairs[0]))
        assert first.status_code == 200, first.text
        page = first.json()
        assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (3, 2, 0, 2)
        rest = await client.get(f"{API}/auth/sessions", params={"limit": 2, "offset": 2}, headers=auth(pairs[0]))
        ids = [item["id"] for item in page["items"] + rest.json()["items"]]
        assert ids == [pair["session_id"] for pair in reversed(pairs)]
        current = [item["id"] for item in page["items"] + rest.json()["items"] if item["current"]]
        assert current == [pairs[0]["session_id"]]

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}])
    async def test_bad_paging_422(self, client: httpx.AsyncClient, app: FastAPI, params: dict[str, int]) -> None:
        user = await create_user(app)
        response = await client.get(f"{API}/auth/sessions", params=params, headers=user.headers)
        assert response.status_code == 422

    async def test_login_beyond_the_cap_ends_the_least_recently_used(self, make_app: AppFactory) -> None:
        application = await make_app(MAX_SESSIONS_PER_USER=2)
        user = await create_user(application, logged_in=False)
        async with client_for(application) as client:
            a = await tokens(client, user.email, DEFAULT_PASSWORD)
            b = await tokens(client, user.email, DEFAULT_PASSWORD)
            refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": a["refresh_token"]})
            assert refreshed.status_code == 200  # a is now used more recently than b
            a = refreshed.json()
            c = await tokens(client, user.email, DEFAULT_PASSWORD)
            ended = await client.get(f"{API}/users/me", headers=auth(b))
            assert ended.status_code == 401 and ended.json()["code"] == "session_revoked"
            assert (
                await client.post(f"{API}/auth/refresh", json={"refresh_token": b["refresh_token"]})
            ).status_code == 401
            for pair in (a, c):
                assert (await client.get(f"{API}/users/me", headers=auth(pair))).status_code == 200
            listed = await client.get(f"{API}/auth/sessions", headers=auth(c))
            assert {item["id"] for item in listed.json()["items"]} == {a["session_id"], c["session_id"]}
            assert listed.json()["total"] == 2

    @requires_postgres()
    async def test_parallel_logins_never_exceed_the_cap(self, make_app: AppFactory) -> None:
        application = await make_app(MAX_SESSIONS_PER_USER=3)
        user = await create_user(application, logged_in=False)
        async with client_for(application) as client:
            answers = await asyncio.gather(*(login(client, user.email, DEFAULT_PASSWORD) for _ in range(10)))
        assert [response.status_code for response in answers] == [200] * 10
        assert await live_sessions(application, user.id) == 3

    @requires_postgres()
    async def test_two_logins_in_flight_at_once_keep_the_cap(self, make_app: AppFactory) -> None:
        """The interleaving the parallel requests above rarely hit (password hashing spaces them out): the
        second login counts the sessions while the first one's is written but not committed."""
        application = await make_app(MAX_SESSIONS_PER_USER=1)
        settings = application.state.settings
        user = await create_user(application, logged_in=False)
        async with application.state.sessionmaker() as first, application.state.sessionmaker() as second:
            await auth_service.start_session(
                first, settings, user=await first.get_one(User, user.id), client=auth_service.ClientInfo()
            )
            racer = asyncio.create_task(
                auth_service.start_session(
                    second, settings, user=await second.get_one(User, user.id), client=auth_service.ClientInfo()
                )
            )
            await asyncio.sleep(0.3)  # the racer reaches the point where it counts (and waits there)
            await first.commit()
            await racer
            await second.commit()
        assert await live_sessions(application, user.id) == 1


# --- first-superuser promotion of an existing account ----------------------------------------------------------


FIRST_PASSWORD = "First-Superuser-Pass-1"


class TestFirstSuperuserBootstrap:
    async def test_squatted_unverified_account_is_taken_over_by_the_configuration(
        self, app: FastAPI, make_app: AppFactory
    ) -> None:
        root = unique_email("root")
        async with client_for(app) as attacker:
            await register(attacker, root)
            squat = await tokens(attacker, root)
        await make_app(FIRST_SUPERUSER_EMAIL=root, FIRST_SUPERUSER_PASSWORD=FIRST_PASSWORD)
        await assert_locked_out(app, squat, email=root)
        async with client_for(app) as operator:
            pair = await tokens(operator, root, FIRST_PASSWORD)
            me = await operator.get(f"{API}/users/me", headers=auth(pair))
        assert me.json()["is_superuser"] is True and me.json()["is_verified"] is True

    async def test_verified_account_keeps_its_password(self, app: FastAPI, make_app: AppFactory) -> None:
        existing = await create_user(app, is_verified=True)
        await make_app(FIRST_SUPERUSER_EMAIL=existing.email, FIRST_SUPERUSER_PASSWORD=FIRST_PASSWORD)
        async with client_for(app) as client:
            assert (await client.get(f"{API}/users/me", headers=existing.headers)).json()["is_superuser"] is True
            assert (await login(client, existing.email, DEFAULT_PASSWORD)).status_code == 200
            assert (await login(client, existing.email, FIRST_PASSWORD)).status_code == 401

    async def test_unverified_supabase_identity_is_unlinked(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, make_app: AppFactory
    ) -> None:
        application = await supabase_app()
        root = unique_email("root")
        attacker_token = mint(claims(issuer=jwks_server.issuer, email=root, email_verified=False))
        async with client_for(application) as attacker:
            assert (await attacker.get(f"{API}/users/me", headers=bearer(attacker_token))).status_code == 200
        await make_app(FIRST_SUPERUSER_EMAIL=root, FIRST_SUPERUSER_PASSWORD=FIRST_PASSWORD)
        async with client_for(application) as attacker:
            again = await attacker.get(f"{API}/users/me", headers=bearer(attacker_token))
        assert again.status_code == 409 and again.json()["code"] == "account_exists"
        async with client_for(application) as operator:
            pair = await tokens(operator, root, FIRST_PASSWORD)
            assert (await operator.get(f"{API}/admin/users", headers=auth(pair))).status_code == 200


# --- Supabase merge ----------------------------------------------------------------------------------------------


class TestSupabaseMerge:
    async def test_verified_sign_in_evicts_the_squatter(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        victim = unique_email("victim")
        async with client_for(application) as attacker:
            await register(attacker, victim)
            squat = await tokens(attacker, victim)
        owner_token = mint(claims(issuer=jwks_server.issuer, email=victim, email_verified=True))
        async with client_for(application) as owner:
            assert (await owner.get(f"{API}/users/me", headers=bearer(owner_token))).status_code == 200
        await assert_locked_out(application, squat, email=victim)

    async def test_unverified_sign_in_gets_nothing(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        """The attacker is the Supabase side here: an unconfirmed Supabase sign-up for someone's address."""
        application = await supabase_app()
        owner = await create_user(application)
        token = mint(claims(issuer=jwks_server.issuer, email=owner.email.upper(), email_verified=False))
        async with client_for(application) as attacker:
            me = await attacker.get(f"{API}/users/me", headers=bearer(token))
            assert me.status_code == 409 and me.json()["code"] == "account_exists"
            assert (await attacker.get(f"{API}/credits", headers=bearer(token))).status_code == 409
        stored = await load_user(application, owner.id)
        assert stored is not None and stored.supabase_id is None


# --- verification link and password reset ---------------------------------------------------------------------


class TestVerificationLink:
    async def test_squatter_cannot_verify_without_the_mail(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        victim = unique_email("victim")
        await register(client, victim)
        squat = await tokens(client, victim)
        assert (await client.post(f"{API}/auth/verify-email/request", headers=auth(squat))).status_code == 202
        # The link went to the victim's mailbox; the attacker only has tokens of their own mailbox, or guesses.
        await register(client, own := unique_email("attacker"))
        own_token = mailed_token(app, own, "verify-email")
        for token in ("A" * 43, own_token):
            await client.post(f"{API}/auth/verify-email/confirm", json={"token": token})
        me = await client.get(f"{API}/users/me", headers=auth(squat))
        assert me.json()["is_verified"] is False


class TestPasswordReset:
    async def test_the_owners_reset_evicts_the_squatter(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        victim = unique_email("victim")
        await register(client, victim)
        squat = await tokens(client, victim)
        # The owner finds the address taken (409) and resets the password from their mailbox.
        taken = await client.post(f"{API}/auth/register", json={"email": victim, "password": OWNER_PASSWORD})
        assert taken.status_code == 409
        assert (await client.post(f"{API}/auth/password-reset/request", json={"email": victim})).status_code == 202
        token = mailed_token(app, victim, "reset-password")
        confirm = await client.post(
            f"{API}/auth/password-reset/confirm", json={"token": token, "new_password": OWNER_PASSWORD}
        )
        assert confirm.status_code == 204
        await assert_locked_out(app, squat, email=victim)
        owner = await tokens(client, victim, OWNER_PASSWORD)
        assert (await client.get(f"{API}/users/me", headers=auth(owner))).json()["is_verified"] is True


# --- admin edits -----------------------------------------------------------------------------------------------


class TestAdminEdits:
    @pytest.mark.parametrize("change", [{"is_verified": True}, {"email": "someone-else@example.com"}])
    async def test_no_admin_edit_verifies_or_moves_an_address(
        self, client: httpx.AsyncClient, app: FastAPI, change: dict[str, Any]
    ) -> None:
        admin = await create_user(app, is_superuser=True)
        target = await create_user(app, is_verified=False)
        response = await client.patch(f"{API}/admin/users/{target.id}", json=change, headers=admin.headers)
        assert response.status_code == 422
        stored = await load_user(app, target.id)
        assert stored is not None and (stored.email, stored.is_verified) == (target.email, False)
