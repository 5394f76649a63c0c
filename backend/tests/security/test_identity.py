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
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth.models import AuthSession, EmailToken
from app.core.db import utcnow
from app.integrations.email.sender import EmailSender
from app.state import state_of
from tests import factories, supabase_tokens
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
    sender: EmailSender = state_of(app).email_sender
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
        sender: EmailSender = state_of(application).email_sender
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
    async with state_of(app).sessionmaker() as session:
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
        settings = state_of(application).settings
        user = await create_user(application, logged_in=False)
        data = state_of(application).data
        async with data.transaction() as first, data.transaction() as second:
            await auth_service.start_session(first, settings, user_id=user.id)
            racer = asyncio.create_task(auth_service.start_session(second, settings, user_id=user.id))
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


# --- email change ------------------------------------------------------------------------------------------------

NEW_ADDRESS_LINK = "confirm-email-change"


async def request_change(
    client: httpx.AsyncClient, pair: dict[str, Any] | factories.TestUser, email: str, password: str = DEFAULT_PASSWORD
) -> httpx.Response:
    headers = auth(pair) if isinstance(pair, dict) else pair.headers
    return await client.post(
        f"{API}/users/me/email", json={"email": email, "current_password": password}, headers=headers
    )


async def confirm_change(
    client: httpx.AsyncClient, token: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(f"{API}/users/me/email/confirm", json={"token": token}, headers=headers or {})


class TestEmailChange:
    async def test_request_mails_the_new_address_and_notifies_the_old(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        user = await create_user(app)
        new = unique_email("new")
        response = await request_change(client, user, new.upper())
        assert response.status_code == 202, response.text
        sender: EmailSender = state_of(app).email_sender
        [confirmation] = [mail for mail in sender.outbox if mail.to == new]
        assert f"{state_of(app).settings.FRONTEND_URL}/{NEW_ADDRESS_LINK}?token=" in confirmation.text
        [notice] = [mail for mail in sender.outbox if mail.to == user.email]
        assert "token=" not in notice.text and "http" not in notice.text and new in notice.text
        me = await client.get(f"{API}/users/me", headers=user.headers)
        assert me.json()["email"] == user.email  # nothing changes before the confirmation

    async def test_confirm_switches_verifies_and_ends_other_sessions(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        user = await create_user(app, is_verified=False)
        other = await tokens(client, user.email, DEFAULT_PASSWORD)
        new = unique_email("new")
        assert (await request_change(client, user, new)).status_code == 202
        confirmed = await confirm_change(client, mailed_token(app, new, NEW_ADDRESS_LINK), user.headers)
        assert confirmed.status_code == 200, confirmed.text
        body = confirmed.json()
        assert (body["email"], body["is_verified"], body["id"]) == (new, True, str(user.id))
        assert (await client.get(f"{API}/users/me", headers=user.headers)).status_code == 200  # the caller's stays
        ended = await client.get(f"{API}/users/me", headers=auth(other))
        assert ended.status_code == 401 and ended.json()["code"] == "session_revoked"
        assert (await login(client, user.email, DEFAULT_PASSWORD)).status_code == 401
        assert (await login(client, new, DEFAULT_PASSWORD)).status_code == 200

    async def test_confirm_without_a_token_ends_every_session(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        new = unique_email("new")
        assert (await request_change(client, user, new)).status_code == 202
        confirmed = await confirm_change(client, mailed_token(app, new, NEW_ADDRESS_LINK))
        assert confirmed.status_code == 200
        assert (await client.get(f"{API}/users/me", headers=user.headers)).status_code == 401

    async def test_wrong_password_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await request_change(client, user, unique_email("new"), "Not-The-Password-1")
        assert response.status_code == 401 and response.json()["code"] == "invalid_credentials"
        sender: EmailSender = state_of(app).email_sender
        assert not [mail for mail in sender.outbox if mail.to == user.email]
        assert (await client.get(f"{API}/users/me", headers=user.headers)).status_code == 200  # the token is fine

    @pytest.mark.parametrize("whose", ["someone_else", "own"])
    async def test_address_taken_409(self, client: httpx.AsyncClient, app: FastAPI, whose: str) -> None:
        user = await create_user(app)
        taken = (await create_user(app, logged_in=False)).email if whose == "someone_else" else user.email
        response = await request_change(client, user, spellings(taken)[1])
        assert response.status_code == 409 and response.json()["code"] == "email_taken"

    async def test_supabase_user_409(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        token = mint(claims(issuer=jwks_server.issuer, email_verified=True))
        async with client_for(application) as client:
            response = await client.post(
                f"{API}/users/me/email",
                json={"email": unique_email("new"), "current_password": DEFAULT_PASSWORD},
                headers=bearer(token),
            )
        assert response.status_code == 409 and response.json()["code"] == "managed_by_supabase"

    async def test_patch_me_refuses_email_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.patch(f"{API}/users/me", json={"email": unique_email("new")}, headers=user.headers)
        assert response.status_code == 422
        assert (await load_user(app, user.id)).email == user.email  # type: ignore[union-attr]
        renamed = await client.patch(f"{API}/users/me", json={"full_name": "New Name"}, headers=user.headers)
        assert renamed.status_code == 200 and renamed.json()["full_name"] == "New Name"

    @pytest.mark.parametrize("token", ["", "x" * 600])
    async def test_malformed_token_422(self, client: httpx.AsyncClient, token: str) -> None:
        assert (await confirm_change(client, token)).status_code == 422

    async def test_unknown_token_400(self, client: httpx.AsyncClient) -> None:
        response = await confirm_change(client, "A" * 43)
        assert response.status_code == 400 and response.json()["code"] == "invalid_token"

    async def test_token_works_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        new = unique_email("new")
        await request_change(client, user, new)
        token = mailed_token(app, new, NEW_ADDRESS_LINK)
        assert (await confirm_change(client, token)).status_code == 200
        again = await confirm_change(client, token)
        assert again.status_code == 400 and again.json()["code"] == "invalid_token"

    async def test_token_expires_after_an_hour(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        new = unique_email("new")
        await request_change(client, user, new)
        async with state_of(app).sessionmaker() as session:
            row = await session.scalar(select(EmailToken).where(EmailToken.user_id == user.id))
            assert row is not None and timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)
            await session.execute(
                update(EmailToken).where(EmailToken.id == row.id).values(expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        response = await confirm_change(client, mailed_token(app, new, NEW_ADDRESS_LINK))
        assert response.status_code == 400 and response.json()["code"] == "invalid_token"

    async def test_a_newer_request_spends_the_older_link(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first, second = unique_email("first"), unique_email("second")
        await request_change(client, user, first)
        await request_change(client, user, second)
        stale = await confirm_change(client, mailed_token(app, first, NEW_ADDRESS_LINK))
        assert stale.status_code == 400
        assert (await confirm_change(client, mailed_token(app, second, NEW_ADDRESS_LINK))).status_code == 200

    async def test_address_taken_meanwhile_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        new = unique_email("new")
        await request_change(client, user, new)
        await register(client, new)  # someone else registers it before the link is used
        response = await confirm_change(client, mailed_token(app, new, NEW_ADDRESS_LINK))
        assert response.status_code == 409 and response.json()["code"] == "email_taken"
        assert (await load_user(app, user.id)).email == user.email  # type: ignore[union-attr]

    async def test_old_mail_links_die_with_the_old_address(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """A verification or reset link mailed to the former address proves nothing about the account now."""
        user = await create_user(app, is_verified=False)
        assert (await client.post(f"{API}/auth/verify-email/request", headers=user.headers)).status_code == 202
        assert (await client.post(f"{API}/auth/password-reset/request", json={"email": user.email})).status_code == 202
        verify, reset = mailed_token(app, user.email, "verify-email"), mailed_token(app, user.email, "reset-password")
        new = unique_email("new")
        await request_change(client, user, new)
        assert (await confirm_change(client, mailed_token(app, new, NEW_ADDRESS_LINK), user.headers)).status_code == 200
        assert (await client.post(f"{API}/auth/verify-email/confirm", json={"token": verify})).status_code == 400
        body = {"token": reset, "new_password": ATTACKER_PASSWORD}
        assert (await client.post(f"{API}/auth/password-reset/confirm", json=body)).status_code == 400

    async def test_stolen_access_token_cannot_move_the_account(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """The attack the two-step flow closes: with only the victim's access token, move the account to an own
        address and reset the password there."""
        victim = await create_user(app)
        attacker_mailbox = unique_email("attacker")
        patched = await client.patch(f"{API}/users/me", json={"email": attacker_mailbox}, headers=victim.headers)
        assert patched.status_code == 422
        guessed = await request_change(client, victim, attacker_mailbox, "Guessed-Password-99")
        assert guessed.status_code == 401
        assert (
            await client.post(f"{API}/auth/password-reset/request", json={"email": attacker_mailbox})
        ).status_code == 202
        sender: EmailSender = state_of(app).email_sender
        assert not [mail for mail in sender.outbox if mail.to == attacker_mailbox]
        assert (await load_user(app, victim.id)).email == victim.email  # type: ignore[union-attr]

    @requires_postgres()
    async def test_parallel_confirmations_switch_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        new = unique_email("new")
        await request_change(client, user, new)
        token = mailed_token(app, new, NEW_ADDRESS_LINK)
        answers = await asyncio.gather(*(confirm_change(client, token) for _ in range(8)))
        assert sorted(response.status_code for response in answers) == [200] + [400] * 7
        async with state_of(app).sessionmaker() as session:
            events = await session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "user.email_changed")
            )
        assert events == 1

    @requires_postgres()
    async def test_two_accounts_racing_for_one_address(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        new = unique_email("contested")
        users = [await create_user(app) for _ in range(2)]
        for user in users:
            assert (await request_change(client, user, new)).status_code == 202
        sender: EmailSender = state_of(app).email_sender
        found = [re.search(r"token=([A-Za-z0-9_\-%]+)", mail.text) for mail in sender.outbox if mail.to == new]
        links = [match.group(1) for match in found if match]
        answers = await asyncio.gather(*(confirm_change(client, token) for token in links))
        assert sorted(response.status_code for response in answers) == [200, 409]
        assert [response.json()["code"] for response in answers if response.status_code == 409] == ["email_taken"]

    async def test_requests_are_rate_limited_per_user(self, make_app: AppFactory) -> None:
        """Each request mails an address of the caller's choosing and checks a password guess."""
        application = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_EMAIL="2/minute")
        user = await create_user(application)
        answers = []
        for index in range(3):
            async with client_for(application, client_addr=(f"198.51.100.{index + 1}", 1000)) as client:
                answers.append(
                    (await request_change(client, user, unique_email("new"), "Guessed-Password-9")).status_code
                )
        assert answers == [401, 401, 429]
