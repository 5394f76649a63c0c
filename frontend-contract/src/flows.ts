/**
 * The flows a frontend needs, on top of the typed client. Each throws `ApiError` (status + `code`) for an
 * error answer, so a UI can branch on `error.code` ("invalid_credentials", "email_taken", "last_owner", ...).
 */
import { ApiError, createApiClient, unwrap, type ApiClient, type Schemas, type StoredTokens } from "./client.js";

export type UserRead = Schemas["UserRead"];
export type UserMe = Schemas["UserMe"];
export type TotpEnrollment = Schemas["TotpEnrollment"];
export type ProfileRead = Schemas["ProfileRead"];
export type OrgRead = Schemas["OrgRead"];
export type OrgRole = Schemas["OrgRead"]["role"];
export type MemberRead = Schemas["MemberRead"];
export type MembershipRead = Schemas["MembershipRead"];
export type InvitationRead = Schemas["InvitationRead"];
export type InvitationCreated = Schemas["InvitationCreated"];
export type AccountExport = Schemas["AccountExport"];
export type ApiKeyRead = Schemas["ApiKeyRead"];
export type ApiKeyCreated = Schemas["ApiKeyCreated"];

export interface Paging {
  limit?: number;
  offset?: number;
}

// --- own accounts ----------------------------------------------------------------------------------------

/** Create an own account. No tokens come back: sign in next (a verification mail is on its way). */
export async function signUp(
  client: ApiClient,
  input: { email: string; password: string; fullName?: string | null },
): Promise<UserRead> {
  return unwrap(
    await client.api.POST("/api/v1/auth/register", {
      body: { email: input.email, password: input.password, full_name: input.fullName ?? null },
    }),
  );
}

/** A right password for an account with MFA on: no tokens yet; finish with `verifyMfa` within 5 minutes. */
export interface MfaPending {
  mfaRequired: true;
  mfaToken: string;
  /** Epoch milliseconds when the mfa token expires (from `expires_in`). */
  expiresAt: number;
}

export type SignInResult = StoredTokens | MfaPending;

export function needsMfa(result: SignInResult): result is MfaPending {
  return "mfaRequired" in result && result.mfaRequired === true;
}

/**
 * Email + password for a session; the tokens go to the client's storage. 401 `invalid_credentials`.
 * With MFA on, no tokens: an `MfaPending` (check with `needsMfa`), completed by `verifyMfa`.
 */
export async function signIn(
  client: ApiClient,
  input: { email: string; password: string; deviceName?: string },
): Promise<SignInResult> {
  const result = await client.api.POST("/api/v1/auth/login", {
    body: { email: input.email, password: input.password, device_name: input.deviceName ?? null },
  });
  const answer = unwrap(result);
  if ("mfa_required" in answer) {
    return { mfaRequired: true, mfaToken: answer.mfa_token, expiresAt: Date.now() + answer.expires_in * 1000 };
  }
  return client.session.accept(answer, result.response);
}

/** A TOTP code from the authenticator app, or one of the recovery codes (each works once). */
export type SecondFactor = { code: string } | { recoveryCode: string };

function secondFactorBody(proof: SecondFactor): { code: string } | { recovery_code: string } {
  return "code" in proof ? { code: proof.code } : { recovery_code: proof.recoveryCode };
}

/**
 * The second step of a sign-in with MFA on: the tokens (of an `aal2` session) go to the client's storage.
 * 401 `invalid_code` (wrong or already used code: ask again); 401 `mfa_token_invalid` (expired, used, or 5
 * wrong codes: sign in again).
 */
export async function verifyMfa(client: ApiClient, pending: MfaPending, proof: SecondFactor): Promise<StoredTokens> {
  const result = await client.api.POST("/api/v1/auth/mfa/verify", {
    body: { mfa_token: pending.mfaToken, ...secondFactorBody(proof) },
  });
  return client.session.accept(unwrap(result), result.response);
}

/** Start TOTP enrolment (own accounts, current password): show `otpauth_uri` as a QR code, and `secret`. */
export async function enrollTotp(client: ApiClient, currentPassword: string): Promise<TotpEnrollment> {
  return unwrap(
    await client.api.POST("/api/v1/auth/mfa/totp/enroll", { body: { current_password: currentPassword } }),
  );
}

/** Turn MFA on with the first code: answers the 10 recovery codes, to show once. 400 `invalid_code`. */
export async function confirmTotp(client: ApiClient, code: string): Promise<string[]> {
  return unwrap(await client.api.POST("/api/v1/auth/mfa/totp/confirm", { body: { code } })).recovery_codes;
}

/** Turn MFA off with a code or a recovery code; every other session of the user ends. 400 `invalid_code`. */
export async function disableTotp(client: ApiClient, proof: SecondFactor): Promise<void> {
  unwrap(await client.api.DELETE("/api/v1/auth/mfa/totp", { body: secondFactorBody(proof) }));
}

/** End the current session on the server (best effort) and forget the tokens locally. */
export async function signOut(client: ApiClient): Promise<void> {
  try {
    if (client.session.tokens) {
      const result = await client.api.POST("/api/v1/auth/logout", { headers: client.session.csrfHeaders() });
      if (!result.response.ok && result.response.status !== 401) unwrap(result);
    }
  } finally {
    client.session.clear();
  }
}

/** The caller, with `mfa_enabled` and the token's `aal` (`aal2` after a second factor). */
export async function getMe(client: ApiClient): Promise<UserMe> {
  return unwrap(await client.api.GET("/api/v1/users/me"));
}

/** The caller's live sessions, newest first (paged); `current` marks this client's. */
export async function listSessions(client: ApiClient, paging: Paging = {}) {
  return unwrap(await client.api.GET("/api/v1/auth/sessions", { params: { query: paging } }));
}

/**
 * Ask to move the account to another address (own accounts; the current password is required). Nothing
 * changes yet: a link to `{FRONTEND_URL}/confirm-email-change?token=...` goes to the new address, a notice to
 * the current one. 401 `invalid_credentials` (wrong password), 409 `email_taken`, 409 `managed_by_supabase`.
 */
export async function requestEmailChange(
  client: ApiClient,
  input: { email: string; currentPassword: string },
): Promise<void> {
  const result = await client.api.POST("/api/v1/users/me/email", {
    body: { email: input.email, current_password: input.currentPassword },
  });
  if (!result.response.ok) unwrap(result);
}

/**
 * The page behind the mailed link: spend its token. The account now has the new, verified address and every
 * other session ends (this client's stays when it is signed in as that user). 400 `invalid_token`, 409
 * `email_taken` (the address found an account meanwhile).
 */
export async function confirmEmailChange(client: ApiClient, token: string): Promise<UserRead> {
  return unwrap(await client.api.POST("/api/v1/users/me/email/confirm", { body: { token } }));
}

// --- account lifecycle: export and deletion ------------------------------------------------------------

/**
 * Everything the API keeps about the caller, as one JSON document (`AccountExport`): account, profile, MFA state,
 * sessions, memberships, invitations sent, the whole credit ledger and the audit events by or about the caller.
 * Rate-limited to a few per minute per user (429 `rate_limited`). For a download button, `exportAccountFile`.
 */
export async function exportAccount(client: ApiClient): Promise<AccountExport> {
  return unwrap(await client.api.GET("/api/v1/users/me/export"));
}

/** The same document as a file: a Blob and the server's file name (`Content-Disposition`), to save as is. */
export async function exportAccountFile(client: ApiClient): Promise<{ blob: Blob; filename: string }> {
  const result = await client.api.GET("/api/v1/users/me/export", { parseAs: "blob" });
  const blob = unwrap(result) as unknown as Blob;
  const disposition = result.response.headers.get("Content-Disposition") ?? "";
  const filename = /filename="([^"]+)"/.exec(disposition)?.[1] ?? "account-export.json";
  return { blob, filename };
}

/**
 * Delete the caller's account for good, then forget the tokens. Own accounts send the current password (401
 * `invalid_credentials` when wrong; 401 `reauthentication_required` without it); Supabase users send none, but
 * their token must be at most 5 minutes old (401 `reauthentication_required`: sign in again with Supabase, e.g.
 * `supabase.auth.signInWithPassword`, then retry). 409 `sole_owner`: the caller is the last owner of an
 * organization with other members (transfer ownership first); 409 `last_superuser`. Organizations the caller
 * alone belongs to are deleted with the account. Afterwards a Supabase token from before the deletion answers
 * 401 `account_deleted`.
 */
export async function deleteAccount(client: ApiClient, input: { currentPassword?: string } = {}): Promise<void> {
  const body = input.currentPassword === undefined ? {} : { current_password: input.currentPassword };
  const result = await client.api.DELETE("/api/v1/users/me", { body });
  if (!result.response.ok) unwrap(result);
  client.session.clear();
}

// --- profile (the Supabase sign-up / sign-in flow) -------------------------------------------------------

/**
 * After a Supabase sign-in: GET /profile, and on 404 `profile_not_found` POST /profile (get-or-create, so two
 * tabs doing this at once both end up with the same profile). `created` tells a UI to show onboarding.
 */
export async function ensureProfile(
  client: ApiClient,
  input: { fullName?: string | null } = {},
): Promise<{ profile: ProfileRead; created: boolean }> {
  const found = await client.api.GET("/api/v1/profile");
  if (found.data) return { profile: found.data, created: false };
  const error = new ApiError(found.response.status, found.error);
  if (error.code !== "profile_not_found") throw error;
  const made = await client.api.POST("/api/v1/profile", { body: { full_name: input.fullName ?? null } });
  return { profile: unwrap(made), created: made.response.status === 201 };
}

export async function updateProfile(
  client: ApiClient,
  changes: { full_name?: string | null; avatar_url?: string | null },
): Promise<ProfileRead> {
  return unwrap(await client.api.PUT("/api/v1/profile", { body: changes }));
}

// --- organizations -------------------------------------------------------------------------------------

export async function createOrganization(
  client: ApiClient,
  input: { name: string; slug?: string },
): Promise<OrgRead> {
  return unwrap(await client.api.POST("/api/v1/organizations", { body: input }));
}

/**
 * Require (or stop requiring) MFA of every member: owners only, signed in with a second factor (`aal2`).
 * 403 `mfa_required` when the caller's session is `aal1`; 403 `insufficient_role` for admins.
 */
export async function setOrganizationRequiresMfa(client: ApiClient, orgId: string, required: boolean): Promise<OrgRead> {
  return unwrap(
    await client.api.PATCH("/api/v1/organizations/{org_id}", {
      params: { path: { org_id: orgId } },
      body: { require_mfa: required },
    }),
  );
}

export async function listMyOrganizations(client: ApiClient, paging: Paging = {}) {
  return unwrap(await client.api.GET("/api/v1/organizations", { params: { query: paging } }));
}

export async function listMembers(client: ApiClient, orgId: string, paging: Paging = {}) {
  return unwrap(
    await client.api.GET("/api/v1/organizations/{org_id}/members", {
      params: { path: { org_id: orgId }, query: paging },
    }),
  );
}

/** Add an existing user by email (admin+). 409 when they are already a member. */
export async function addMember(
  client: ApiClient,
  orgId: string,
  input: { email: string; role?: OrgRole },
): Promise<MemberRead> {
  return unwrap(
    await client.api.POST("/api/v1/organizations/{org_id}/members", {
      params: { path: { org_id: orgId } },
      body: { email: input.email, role: input.role ?? "member" },
    }),
  );
}

/** Invite an email address (admin+). The answer carries the token once; it is also mailed. */
export async function inviteMember(
  client: ApiClient,
  orgId: string,
  input: { email: string; role?: OrgRole },
): Promise<InvitationCreated> {
  return unwrap(
    await client.api.POST("/api/v1/organizations/{org_id}/invitations", {
      params: { path: { org_id: orgId } },
      body: { email: input.email, role: input.role ?? "member" },
    }),
  );
}

export async function listInvitations(client: ApiClient, orgId: string, paging: Paging = {}) {
  return unwrap(
    await client.api.GET("/api/v1/organizations/{org_id}/invitations", {
      params: { path: { org_id: orgId }, query: paging },
    }),
  );
}

export async function revokeInvitation(client: ApiClient, orgId: string, invitationId: string): Promise<void> {
  unwrap(
    await client.api.DELETE("/api/v1/organizations/{org_id}/invitations/{invitation_id}", {
      params: { path: { org_id: orgId, invitation_id: invitationId } },
    }),
  );
}

/** The invited user (signed in, with the invited email) accepts with the token from the mail link. */
export async function acceptInvitation(client: ApiClient, token: string): Promise<MembershipRead> {
  return unwrap(await client.api.POST("/api/v1/invitations/accept", { body: { token } }));
}

/** Change a member's role (admin+; only owners touch the owner role). 409 `last_owner`. */
export async function changeMemberRole(
  client: ApiClient,
  orgId: string,
  userId: string,
  role: OrgRole,
): Promise<MemberRead> {
  return unwrap(
    await client.api.PATCH("/api/v1/organizations/{org_id}/members/{user_id}", {
      params: { path: { org_id: orgId, user_id: userId } },
      body: { role },
    }),
  );
}

/** Remove a member (admin+), or leave when `userId` is the caller's own id. 409 `last_owner`. */
export async function removeMember(client: ApiClient, orgId: string, userId: string): Promise<void> {
  unwrap(
    await client.api.DELETE("/api/v1/organizations/{org_id}/members/{user_id}", {
      params: { path: { org_id: orgId, user_id: userId } },
    }),
  );
}

// --- organization API keys ---------------------------------------------------------------------------------

/**
 * Create an organization API key (admin+, signed in as a person; `aal2` where the organization requires MFA).
 * `key` is in this answer only: show it once. `role` is "admin" or "member" (never above the caller's own).
 */
export async function createApiKey(
  client: ApiClient,
  orgId: string,
  input: { name: string; role: "admin" | "member"; expiresInDays?: number | null },
): Promise<ApiKeyCreated> {
  return unwrap(
    await client.api.POST("/api/v1/organizations/{org_id}/api-keys", {
      params: { path: { org_id: orgId } },
      body: { name: input.name, role: input.role, expires_in_days: input.expiresInDays ?? null },
    }),
  );
}

/** The organization's keys that are not revoked (admin+), newest first; never the keys themselves. */
export async function listApiKeys(client: ApiClient, orgId: string, paging: Paging = {}) {
  return unwrap(
    await client.api.GET("/api/v1/organizations/{org_id}/api-keys", {
      params: { path: { org_id: orgId }, query: paging },
    }),
  );
}

/** Revoke a key (admin+): its next use answers 401 `invalid_api_key`, on every server. */
export async function revokeApiKey(client: ApiClient, orgId: string, keyId: string): Promise<void> {
  unwrap(
    await client.api.DELETE("/api/v1/organizations/{org_id}/api-keys/{key_id}", {
      params: { path: { org_id: orgId, key_id: keyId } },
    }),
  );
}

/**
 * A client that calls the API with an organization API key (server-side tooling: never ship a key to a browser).
 * It acts on that organization's members, invitations and audit events only (403 `api_key_not_allowed` elsewhere).
 */
export function apiKeyClient(baseUrl: string, key: string): ApiClient {
  return createApiClient({ baseUrl, getAccessToken: () => key });
}

