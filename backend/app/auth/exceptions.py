from app.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    OAuth2Error,
    ServiceUnavailable,
    Unauthenticated,
)


class NotAuthenticatedError(Unauthenticated):
    code, detail = "not_authenticated", "Not authenticated."


class InvalidAccessTokenError(Unauthenticated):
    code, detail = "invalid_token", "The access token is invalid."


class AccessTokenExpiredError(Unauthenticated):
    code, detail = "token_expired", "The access token has expired."


class SessionRevokedError(Unauthenticated):
    code, detail = "session_revoked", "This session has ended; sign in again."


class InvalidCredentialsError(Unauthenticated):
    code, detail = "invalid_credentials", "Incorrect email or password."


class InactiveUserError(Unauthenticated):
    code, detail = "inactive_user", "This account is deactivated."


class InvalidRefreshTokenError(Unauthenticated):
    code, detail = "invalid_refresh_token", "The refresh token is invalid."


class RefreshTokenExpiredError(Unauthenticated):
    code, detail = "refresh_token_expired", "The refresh token has expired; sign in again."


class RefreshTokenReusedError(Unauthenticated):
    code, detail = "refresh_token_reused", "This refresh token was already used; the session has been ended."


class SessionNotFoundError(NotFound):
    code, detail = "session_not_found", "Session not found."


class NotOwnSessionError(BadRequest):
    code, detail = "not_own_session", "This endpoint is for sessions of this API's own accounts."


class WrongPasswordError(BadRequest):
    code, detail = "invalid_password", "The current password is incorrect."


class InvalidEmailTokenError(BadRequest):
    code, detail = "invalid_token", "The token is invalid, expired or already used."


class CsrfError(Forbidden):
    code, detail = "csrf_failed", "The CSRF check failed."


class AnonymousUserError(Forbidden):
    code, detail = "anonymous_user", "Anonymous users are not allowed."


class AccountExistsError(Conflict):
    code, detail = "account_exists", "An account with this email already exists."


class JwksUnavailableError(ServiceUnavailable):
    code, detail = "jwks_unavailable", "Supabase signing keys cannot be fetched right now."


class WeakPasswordError(FieldError):
    """The new password equals the account's email (known only to the service): 422 under the field, like the
    rules the schema checks."""

    detail = "Password must not be the same as the email."
    error_type = "password_policy"


class MfaAlreadyEnabledError(Conflict):
    code, detail = "mfa_already_enabled", "Multi-factor authentication is already on; turn it off first."


class MfaNotEnrolledError(BadRequest):
    code, detail = "mfa_not_enrolled", "There is no pending enrolment to confirm; enrol first."


class MfaNotEnabledError(BadRequest):
    code, detail = "mfa_not_enabled", "Multi-factor authentication is not on."


class InvalidMfaCodeError(BadRequest):
    code, detail = "invalid_code", "The code is wrong, expired or already used."


class InvalidMfaLoginCodeError(Unauthenticated):
    """The second step of a login: a wrong code is a failed sign-in (401), like a wrong password."""

    code, detail = "invalid_code", "The code is wrong, expired or already used."


class MfaTokenInvalidError(Unauthenticated):
    code, detail = "mfa_token_invalid", "This sign-in step is unknown, expired or used up; sign in again."


class MfaRequiredError(Forbidden):
    code, detail = "mfa_required", "This needs a session signed in with a second factor (aal2)."


class AccountDeletedError(Unauthenticated):
    """A Supabase token issued before its account here was deleted (app/users/lifecycle.py): never the key to a
    silently re-created account. A token issued after the deletion (signing in again) may create a new one."""

    code, detail = "account_deleted", "This account was deleted; sign in again to start a new one."


class ReauthenticationRequiredError(Unauthenticated):
    """A sensitive action (deleting the account) needs a recent proof: the current password (own accounts), or
    a Supabase token issued in the last few minutes."""

    code, detail = "reauthentication_required", "Confirm it is you: sign in again, then retry within 5 minutes."


class InvalidApiKeyError(Unauthenticated):
    """Unknown, malformed, revoked or expired, of a deleted organization, or of a creator who is no longer an
    admin or owner there (or deactivated): one answer, so that a key's state does not leak."""

    code, detail = "invalid_api_key", "The API key is invalid, expired or revoked."


class ApiKeyNotAllowedError(Forbidden):
    code, detail = "api_key_not_allowed", "Organization API keys cannot be used for this."


# --- the token endpoint (RFC 6749): errors OAuth2 clients understand ----------------------------------------


class TokenRequestInvalidError(OAuth2Error, BadRequest):
    error = "invalid_request"
    code, detail = "invalid_request", "The token request is missing a parameter or repeats one."


class UnsupportedGrantTypeError(OAuth2Error, BadRequest):
    error = "unsupported_grant_type"
    code, detail = "unsupported_grant_type", "grant_type must be password or refresh_token."


class InvalidClientError(OAuth2Error, Unauthenticated):
    """A client that authenticates (a client secret): this API has no confidential clients to know it by."""

    error = "invalid_client"
    code, detail = (
        "invalid_client",
        "Client authentication failed: this API has no confidential clients (send no secret).",
    )
    headers = {"WWW-Authenticate": 'Basic realm="token"'}


class InvalidGrantError(OAuth2Error, BadRequest):
    """A refused grant (wrong password, spent refresh token, ...): ``invalid_grant``, with the precise ``code`` of
    the refusal (``invalid_credentials``, ``refresh_token_reused``, ...); one subclass per refusal."""

    error = "invalid_grant"


_INVALID_GRANTS: dict[type[AppError], type[InvalidGrantError]] = {}


def invalid_grant(refusal: type[AppError]) -> type[InvalidGrantError]:
    """The ``invalid_grant`` error of a refusal (an error the login or refresh raises), keeping its code and detail;
    one class per refusal, so that the OpenAPI document lists each code."""
    if refusal not in _INVALID_GRANTS:
        name = f"InvalidGrant_{refusal.__name__}"
        _INVALID_GRANTS[refusal] = type(name, (InvalidGrantError,), {"code": refusal.code, "detail": refusal.detail})
    return _INVALID_GRANTS[refusal]
