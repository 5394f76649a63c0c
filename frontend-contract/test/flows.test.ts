/**
 * The client's flows against a real running API (started by backend/tests/contract/test_frontend_flows.py).
 *
 *   API_URL=http://127.0.0.1:8000 SUPABASE_JWT_SECRET=... SUPABASE_URL=... npm test
 *
 * API_REFRESH_COOKIE=true says the server runs with AUTH_REFRESH_COOKIE=true (the cookie-mode test needs it).
 */
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { describe, test } from "node:test";

import {
  ApiError,
  acceptInvitation,
  addMember,
  apiKeyClient,
  changeMemberRole,
  createApiKey,
  confirmTotp,
  createApiClient,
  deleteAccount,
  disableTotp,
  exportAccount,
  exportAccountFile,
  enrollTotp,
  createOrganization,
  ensureProfile,
  confirmEmailChange,
  getMe,
  inviteMember,
  listApiKeys,
  listInvitations,
  listMembers,
  listMyOrganizations,
  listSessions,
  memoryStorage,
  needsMfa,
  removeMember,
  requestEmailChange,
  revokeApiKey,
  setOrganizationRequiresMfa,
  signIn,
  signOut,
  signUp,
  verifyMfa,
  type ApiClient,
  type ApiClientOptions,
} from "../src/index.js";

const API_URL = process.env.API_URL;
if (!API_URL) throw new Error("API_URL is required (the base URL of a running API)");
const PASSWORD = "Frontend-Contract-Pass-42";

function uniqueEmail(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}@example.com`;
}

/** A fetch that counts what it sends, so the tests can see how many refreshes went out. */
function countingFetch(inner: (input: Request) => Promise<Response> = (input) => fetch(input)) {
  const sent: string[] = [];
  const wrapped = async (input: Request): Promise<Response> => {
    sent.push(`${input.method} ${new URL(input.url).pathname}`);
    return inner(input);
  };
  return { fetch: wrapped, sent, count: (what: string) => sent.filter((line) => line === what).length };
}

function client(options: Partial<ApiClientOptions> = {}): ApiClient {
  return createApiClient({ baseUrl: API_URL!, ...options });
}

async function signedInUser(prefix: string, options: Partial<ApiClientOptions> = {}) {
  const email = uniqueEmail(prefix);
  const c = client(options);
  const user = await signUp(c, { email, password: PASSWORD, fullName: `${prefix} user` });
  await signIn(c, { email, password: PASSWORD, deviceName: "node test" });
  return { client: c, user, email };
}

async function rejects(promise: Promise<unknown>, status: number, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ApiError, `expected ApiError, got ${String(error)}`);
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    return true;
  });
}

describe("own accounts", () => {
  test("sign up, sign in, and call a protected endpoint", async () => {
    const { client: c, user, email } = await signedInUser("signin");
    assert.equal(user.email, email);
    const tokens = c.session.tokens;
    assert.ok(tokens?.accessToken && tokens.refreshToken && tokens.sessionId);
    assert.ok(tokens.expiresAt > Date.now());
    const me = await getMe(c);
    assert.equal(me.id, user.id);
  });

  test("wrong password is 401 invalid_credentials and stores nothing", async () => {
    const c = client();
    const email = uniqueEmail("wrongpw");
    await signUp(c, { email, password: PASSWORD });
    await rejects(signIn(c, { email, password: "Not-The-Password-1" }), 401, "invalid_credentials");
    assert.equal(c.session.tokens, null);
  });

  test("registering an email twice is 409 email_taken", async () => {
    const email = uniqueEmail("twice");
    await signUp(client(), { email, password: PASSWORD });
    await rejects(signUp(client(), { email: email.toUpperCase(), password: PASSWORD }), 409, "email_taken");
  });

  test("a bad body is 422 validation_error", async () => {
    await rejects(signUp(client(), { email: "not-an-email", password: PASSWORD }), 422, "validation_error");
  });

  test("typed error codes: a switch on result.error.code, as README.md shows", async () => {
    const email = uniqueEmail("typed");
    await signUp(client(), { email, password: PASSWORD });
    const seen: string[] = [];
    for (const password of [PASSWORD, "password123"]) {
      const result = await client().api.POST("/api/v1/auth/register", { body: { email, password, full_name: null } });
      assert.ok(result.error);
      const error = result.error;
      switch (error.code) {
        case "email_taken":
          seen.push(`email_taken: ${error.detail}`);
          break;
        case "validation_error": // narrowed to the validation body: detail is the list of field errors
          for (const item of error.detail ?? []) seen.push(`${item.loc.join(".")}: ${item.msg}`);
          break;
        default:
          seen.push(`unexpected ${error.code}`);
      }
      // @ts-expect-error: a misspelt code does not compile (no overlap with this operation's codes)
      assert.notEqual(error.code === "emial_taken", true);
    }
    assert.deepEqual(seen, [
      "email_taken: An account with this email already exists.",
      "body.password: This password is too common.",
    ]);
  });

  test("a 401 refreshes once and retries the request", async () => {
    const counter = countingFetch();
    const { client: c, user } = await signedInUser("refresh", { fetch: counter.fetch });
    const before = c.session.tokens!;
    c.session.accept({ ...toPair(before), access_token: "not-a-valid-token" });
    const me = await getMe(c);
    assert.equal(me.id, user.id);
    assert.equal(counter.count("POST /api/v1/auth/refresh"), 1);
    const after = c.session.tokens!;
    assert.notEqual(after.accessToken, "not-a-valid-token");
    assert.notEqual(after.refreshToken, before.refreshToken, "the refresh token is rotated");
    assert.equal(after.sessionId, before.sessionId);
  });

  test("concurrent 401s share one refresh", async () => {
    const counter = countingFetch();
    const { client: c, user } = await signedInUser("dedupe", { fetch: counter.fetch });
    c.session.accept({ ...toPair(c.session.tokens!), access_token: "not-a-valid-token" });
    const results = await Promise.all(Array.from({ length: 6 }, () => getMe(c)));
    assert.deepEqual(
      results.map((me) => me.id),
      Array(6).fill(user.id),
    );
    assert.equal(counter.count("POST /api/v1/auth/refresh"), 1);
  });

  test("a request body survives the retry after a refresh", async () => {
    const { client: c } = await signedInUser("retrybody");
    c.session.accept({ ...toPair(c.session.tokens!), access_token: "not-a-valid-token" });
    const org = await createOrganization(c, { name: "Retry Body Org" });
    assert.equal(org.name, "Retry Body Org");
    assert.equal(org.role, "owner");
  });

  test("when the refresh fails the session ends: tokens cleared, onSessionExpired called", async () => {
    const expired: ApiError[] = [];
    const { client: c } = await signedInUser("expired", { onSessionExpired: (error) => expired.push(error) });
    c.session.accept({ ...toPair(c.session.tokens!), access_token: "bad", refresh_token: "also-bad" });
    await rejects(getMe(c), 401, "invalid_token");
    assert.equal(c.session.tokens, null);
    assert.equal(expired.length, 1);
    assert.equal(expired[0]!.status, 401);
  });

  test("sign out ends the session on the server", async () => {
    const { client: c } = await signedInUser("signout");
    const access = c.session.tokens!.accessToken;
    await signOut(c);
    assert.equal(c.session.tokens, null);
    const response = await fetch(`${API_URL}/api/v1/users/me`, { headers: { Authorization: `Bearer ${access}` } });
    assert.equal(response.status, 401);
    assert.equal(response.headers.get("www-authenticate"), "Bearer");
  });
});

describe("sessions and email change", () => {
  test("the sessions list is paged, newest first, with this client's marked current", async () => {
    const { client: c, email } = await signedInUser("sessions");
    await signIn(client(), { email, password: PASSWORD, deviceName: "second device" });
    const page = await listSessions(c, { limit: 1 });
    assert.equal(page.total, 2);
    assert.equal(page.limit, 1);
    assert.equal(page.items.length, 1);
    assert.equal(page.items[0]!.device_name, "second device");
    const rest = await listSessions(c, { limit: 1, offset: 1 });
    assert.equal(rest.items[0]!.current, true);
  });

  test("requesting an email change: 202, and the errors a UI must handle (a wrong password refreshes nothing)", async () => {
    const counting = countingFetch();
    const { client: c } = await signedInUser("change", { fetch: counting.fetch });
    await requestEmailChange(c, { email: uniqueEmail("changed"), currentPassword: PASSWORD });
    await rejects(requestEmailChange(c, { email: uniqueEmail("changed"), currentPassword: "Not-The-Password-9" }), 401, "invalid_credentials");
    assert.equal(counting.count("POST /api/v1/auth/refresh"), 0);
    assert.ok(c.session.tokens, "the session is still there");
    const { email: taken } = await signedInUser("taken");
    await rejects(requestEmailChange(c, { email: taken, currentPassword: PASSWORD }), 409, "email_taken");
    await rejects(confirmEmailChange(c, "not-a-token-that-was-ever-mailed"), 400, "invalid_token");
    await rejects(confirmEmailChange(client(), "not-a-token-that-was-ever-mailed"), 400, "invalid_token");
  });
});

describe("account export and deletion", () => {
  test("export the account as JSON and as a file", async () => {
    const { client: c, user } = await signedInUser("export");
    const document = await exportAccount(c);
    assert.equal(document.user.id, user.id);
    assert.equal(document.credit_ledger.length, 1);
    assert.ok(document.sessions.length >= 1);
    const { blob, filename } = await exportAccountFile(c);
    assert.match(filename, /^account-export-.*\.json$/);
    assert.equal(JSON.parse(await blob.text()).user.id, user.id);
  });

  test("delete: the errors a UI must handle, then 204 and the session is gone", async () => {
    const counting = countingFetch();
    const { client: c, email } = await signedInUser("leave", { fetch: counting.fetch });
    await rejects(deleteAccount(c), 401, "reauthentication_required");
    await rejects(deleteAccount(c, { currentPassword: "Not-The-Password-9" }), 401, "invalid_credentials");
    assert.equal(counting.count("POST /api/v1/auth/refresh"), 0);
    const org = await createOrganization(c, { name: "Leaving Co" });
    const other = await signedInUser("stays");
    await addMember(c, org.id, { email: other.email, role: "member" });
    await rejects(deleteAccount(c, { currentPassword: PASSWORD }), 409, "sole_owner");
    await removeMember(c, org.id, other.user.id);
    await deleteAccount(c, { currentPassword: PASSWORD });
    assert.equal(c.session.tokens, null);
    await rejects(signIn(client(), { email, password: PASSWORD }), 401, "invalid_credentials");
  });
});

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of a base32 secret, `steps` steps from now: what an authenticator app shows. */
function totp(secret: string, steps = 0): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const char of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(char).toString(2).padStart(5, "0");
  const key = Buffer.from((bits.match(/.{8}/g) ?? []).map((byte) => parseInt(byte, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30) + steps));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  return ((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).toString().padStart(6, "0");
}

describe("multi-factor authentication (TOTP)", () => {
  test("enrol, confirm, then sign in with a code, and with a recovery code", async () => {
    const { client: c, email } = await signedInUser("mfa");
    const { secret, otpauth_uri } = await enrollTotp(c, PASSWORD);
    assert.match(otpauth_uri, /^otpauth:\/\/totp\//);
    await rejects(confirmTotp(c, totp(secret, 5)), 400, "invalid_code");
    const firstCode = totp(secret);
    const recoveryCodes = await confirmTotp(c, firstCode);
    assert.equal(recoveryCodes.length, 10);
    const me = await getMe(c);
    assert.equal(me.mfa_enabled, true);
    assert.equal(me.aal, "aal2");

    // A new sign-in: the password alone gives no tokens.
    const other = client();
    const pending = await signIn(other, { email, password: PASSWORD });
    assert.ok(needsMfa(pending));
    assert.equal(other.session.tokens, null);
    // The confirming code was spent: it is refused, the next step's code (within the skew) is accepted.
    await rejects(verifyMfa(other, pending, { code: firstCode }), 401, "invalid_code");
    const tokens = await verifyMfa(other, pending, { code: totp(secret, 1) });
    assert.ok(tokens.accessToken);
    assert.equal((await getMe(other)).aal, "aal2");
    await rejects(verifyMfa(other, pending, { code: totp(secret, 1) }), 401, "mfa_token_invalid");

    // Lost phone: a recovery code, once.
    const third = client();
    const again = await signIn(third, { email, password: PASSWORD });
    assert.ok(needsMfa(again));
    await verifyMfa(third, again, { recoveryCode: recoveryCodes[0]! });
    assert.equal((await getMe(third)).aal, "aal2");

    // Turning it off ends the other sessions; sign-in gives tokens again.
    await disableTotp(third, { recoveryCode: recoveryCodes[1]! });
    await rejects(getMe(other), 401, "session_revoked");
    const plain = await signIn(client(), { email, password: PASSWORD });
    assert.equal(needsMfa(plain), false);
  });

  test("an organization that requires MFA: aal1 members get 403 mfa_required, but may leave", async () => {
    const { client: owner } = await signedInUser("mfa-owner");
    const org = await createOrganization(owner, { name: "Strict" });
    await rejects(setOrganizationRequiresMfa(owner, org.id, true), 403, "mfa_required");
    const { secret } = await enrollTotp(owner, PASSWORD);
    await confirmTotp(owner, totp(secret));
    assert.equal((await setOrganizationRequiresMfa(owner, org.id, true)).require_mfa, true);

    const { client: member, email: memberEmail } = await signedInUser("mfa-member");
    const memberId = (await getMe(member)).id;
    await addMember(owner, org.id, { email: memberEmail, role: "member" });
    await rejects(listMembers(member, org.id), 403, "mfa_required");
    const mine = await listMyOrganizations(member);
    assert.equal(mine.items.find((o) => o.id === org.id)?.require_mfa, true);
    await removeMember(member, org.id, memberId);
  });
});

describe("Supabase sign-up / sign-in", { skip: !process.env.SUPABASE_JWT_SECRET && "SUPABASE_JWT_SECRET unset" }, () => {
  test("GET /profile 404 then POST /profile creates it once", async () => {
    const sub = randomUUID();
    const email = uniqueEmail("supa");
    const token = mintSupabaseToken({ sub, email });
    const c = client({ getAccessToken: () => token });
    const first = await ensureProfile(c, { fullName: "Supa Base" });
    assert.equal(first.created, true);
    assert.equal(first.profile.full_name, "Supa Base");
    assert.equal(first.profile.credits, 1000);
    const second = await ensureProfile(c);
    assert.equal(second.created, false);
    assert.equal(second.profile.id, first.profile.id);
    const me = await getMe(c);
    assert.equal(me.id, sub);
    assert.equal(me.email, email);
  });

  test("two tabs ensuring the profile at once get the same one", async () => {
    const token = mintSupabaseToken({ sub: randomUUID(), email: uniqueEmail("tabs") });
    const c = client({ getAccessToken: () => token });
    const [a, b] = await Promise.all([ensureProfile(c), ensureProfile(c)]);
    assert.equal(a.profile.id, b.profile.id);
  });

  test("a fresh Supabase token deletes the account; the same token is then 401 account_deleted", async () => {
    const token = mintSupabaseToken({ sub: randomUUID(), email: uniqueEmail("gone") });
    const c = client({ getAccessToken: () => token });
    await ensureProfile(c);
    await deleteAccount(c);
    await rejects(getMe(c), 401, "account_deleted");
  });

  test("an expired Supabase token is 401 and is not refreshed by this client", async () => {
    const counter = countingFetch();
    const token = mintSupabaseToken({ sub: randomUUID(), email: uniqueEmail("old"), expiresIn: -3600 });
    const c = client({ getAccessToken: () => token, fetch: counter.fetch });
    await assert.rejects(getMe(c), (error: unknown) => error instanceof ApiError && error.status === 401);
    assert.equal(counter.count("POST /api/v1/auth/refresh"), 0);
  });
});

describe("organization admin", () => {
  test("create, invite, accept, list members, change role, remove", async () => {
    const owner = await signedInUser("owner");
    const invitee = await signedInUser("invitee");

    const org = await createOrganization(owner.client, { name: "Contract Org" });
    assert.equal(org.role, "owner");
    const mine = await listMyOrganizations(owner.client);
    assert.ok(mine.items.some((item) => item.id === org.id));

    let members = await listMembers(owner.client, org.id);
    assert.equal(members.total, 1);
    assert.equal(members.items[0]!.role, "owner");

    const invitation = await inviteMember(owner.client, org.id, { email: invitee.email });
    assert.equal(invitation.role, "member");
    assert.ok(invitation.token.length > 20);
    const pending = await listInvitations(owner.client, org.id);
    assert.deepEqual(
      pending.items.map((item) => item.id),
      [invitation.id],
    );
    assert.ok(!("token" in pending.items[0]!), "listed invitations carry no token");

    const membership = await acceptInvitation(invitee.client, invitation.token);
    assert.equal(membership.org_id, org.id);
    assert.equal(membership.role, "member");

    members = await listMembers(owner.client, org.id);
    assert.equal(members.total, 2);

    const promoted = await changeMemberRole(owner.client, org.id, invitee.user.id, "admin");
    assert.equal(promoted.role, "admin");

    await removeMember(owner.client, org.id, invitee.user.id);
    members = await listMembers(owner.client, org.id);
    assert.deepEqual(
      members.items.map((item) => item.user_id),
      [owner.user.id],
    );
    await rejects(listMembers(invitee.client, org.id), 404, "org_not_found");
  });

  test("add an existing user, and the errors a UI must handle", async () => {
    const owner = await signedInUser("owner2");
    const other = await signedInUser("other");
    const org = await createOrganization(owner.client, { name: "Errors Org" });

    const added = await addMember(owner.client, org.id, { email: other.email });
    assert.equal(added.user_id, other.user.id);
    await rejects(addMember(owner.client, org.id, { email: other.email }), 409, "already_member");
    await assert.rejects(changeMemberRole(other.client, org.id, owner.user.id, "member"), isStatus(403));
    await rejects(removeMember(owner.client, org.id, owner.user.id), 409, "last_owner");
  });
});

describe("cookie mode (AUTH_REFRESH_COOKIE=true)", { skip: process.env.API_REFRESH_COOKIE !== "true" && "server not in cookie mode" }, () => {
  test("the refresh token stays in the cookie; a 401 refreshes with the CSRF header", async () => {
    const jar = cookieJar();
    const counter = countingFetch(jar.fetch);
    const c = client({ refreshMode: "cookie", fetch: counter.fetch });
    const email = uniqueEmail("cookie");
    await signUp(c, { email, password: PASSWORD });
    await signIn(c, { email, password: PASSWORD });
    assert.equal(c.session.tokens!.refreshToken, null, "cookie mode keeps no refresh token in script reach");
    assert.ok(jar.has("refresh_token") && jar.has("csrf_token"));

    c.session.accept({ ...toPair(c.session.tokens!), access_token: "not-a-valid-token" });
    const me = await getMe(c);
    assert.equal(me.email, email);
    assert.equal(counter.count("POST /api/v1/auth/refresh"), 1);

    await signOut(c);
    assert.equal(jar.has("refresh_token"), false, "logout clears the refresh cookie");
  });

  test("after a reload (no tokens in memory) the cookie restores the session", async () => {
    const jar = cookieJar();
    const first = client({ refreshMode: "cookie", fetch: jar.fetch });
    const email = uniqueEmail("reload");
    await signUp(first, { email, password: PASSWORD });
    await signIn(first, { email, password: PASSWORD });

    const reloaded = client({ refreshMode: "cookie", fetch: jar.fetch, readCsrfCookie: () => jar.get("csrf_token") });
    assert.equal(reloaded.session.tokens, null);
    assert.ok(await reloaded.session.refresh());
    assert.equal((await getMe(reloaded)).email, email);
  });

  test("a refresh without the CSRF header is 403 csrf_failed", async () => {
    const jar = cookieJar();
    const c = client({ refreshMode: "cookie", fetch: jar.fetch, readCsrfCookie: () => "forged" });
    const email = uniqueEmail("csrf");
    await signUp(c, { email, password: PASSWORD });
    await signIn(c, { email, password: PASSWORD });
    const result = await c.api.POST("/api/v1/auth/refresh", { body: {}, headers: c.session.csrfHeaders() });
    assert.equal(result.response.status, 403);
    assert.equal(result.error && "code" in result.error ? result.error.code : undefined, "csrf_failed");
  });
});

// --- helpers -----------------------------------------------------------------------------------------------

function toPair(tokens: { accessToken: string; refreshToken: string | null; sessionId: string }) {
  return {
    access_token: tokens.accessToken,
    refresh_token: tokens.refreshToken ?? "",
    token_type: "bearer" as const,
    expires_in: 900,
    session_id: tokens.sessionId,
  };
}

function isStatus(status: number) {
  return (error: unknown) => error instanceof ApiError && error.status === status;
}

/** A Supabase user access token signed with the project's HS256 secret, as Supabase Auth issues them. */
function mintSupabaseToken(input: { sub: string; email: string; expiresIn?: number }): string {
  const secret = process.env.SUPABASE_JWT_SECRET!;
  const base = (process.env.SUPABASE_URL ?? "").replace(/\/+$/, "");
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    sub: input.sub,
    email: input.email,
    aud: "authenticated",
    role: "authenticated",
    ...(base ? { iss: `${base}/auth/v1` } : {}),
    iat: now,
    exp: now + (input.expiresIn ?? 3600),
    is_anonymous: false,
    app_metadata: { provider: "email", providers: ["email"] },
    user_metadata: { email_verified: true },
  };
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const data = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(payload)}`;
  return `${data}.${createHmac("sha256", secret).update(data).digest("base64url")}`;
}

/** What a browser does with cookies, enough for this API: name=value by path, Max-Age=0 deletes. */
function cookieJar() {
  const cookies = new Map<string, { value: string; path: string }>();
  return {
    has: (name: string) => cookies.has(name),
    get: (name: string) => cookies.get(name)?.value ?? null,
    fetch: async (input: Request): Promise<Response> => {
      const path = new URL(input.url).pathname;
      const header = [...cookies]
        .filter(([, cookie]) => path.startsWith(cookie.path))
        .map(([name, cookie]) => `${name}=${cookie.value}`)
        .join("; ");
      const request = new Request(input);
      if (header) request.headers.set("Cookie", header);
      const response = await fetch(request);
      for (const line of response.headers.getSetCookie()) {
        const [pair, ...attributes] = line.split(";").map((part) => part.trim());
        const [name, ...value] = pair!.split("=");
        const attr = (key: string) =>
          attributes.find((a) => a.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1);
        const joined = value.join("=").replace(/^"|"$/g, "");
        if (attr("max-age") === "0" || joined === "") cookies.delete(name!);
        else cookies.set(name!, { value: joined, path: attr("path") ?? "/" });
      }
      return response;
    },
  };
}

describe("organization API keys", () => {
  test("an admin creates a key; the key manages members; revoked, it is refused at once", async () => {
    const owner = await signedInUser("key-owner");
    const other = await signedInUser("key-other");
    const org = await createOrganization(owner.client, { name: "Keyed Org" });
    const created = await createApiKey(owner.client, org.id, { name: "HR sync", role: "admin", expiresInDays: 30 });
    assert.ok(created.key.startsWith(`oak_${created.prefix}_`));
    const listed = await listApiKeys(owner.client, org.id);
    assert.deepEqual(
      listed.items.map((item) => item.id),
      [created.id],
    );
    assert.ok(!("key" in listed.items[0]!), "listed keys carry no key");

    const tooling = apiKeyClient(API_URL!, created.key);
    const added = await addMember(tooling, org.id, { email: other.email, role: "member" });
    assert.equal(added.user_id, other.user.id);
    assert.equal((await listMembers(tooling, org.id)).total, 2);
    await rejects(getMe(tooling), 403, "api_key_not_allowed");
    await rejects(createApiKey(tooling, org.id, { name: "more", role: "member" }), 403, "api_key_not_allowed");

    await revokeApiKey(owner.client, org.id, created.id);
    await rejects(listMembers(tooling, org.id), 401, "invalid_api_key");
  });
});

