"""Domain errors of organizations: a category from app.core.errors plus a machine ``code``."""

from app.core.errors import Conflict, Forbidden, NotFound


class OrgNotFoundError(NotFound):
    # Also what a non-member gets for an existing organization: existence must not leak.
    code, detail = "org_not_found", "Organization not found."


class InsufficientRoleError(Forbidden):
    code, detail = "insufficient_role", "Your role in this organization does not allow this."


class MemberNotFoundError(NotFound):
    code, detail = "member_not_found", "This user is not a member of the organization."


class AlreadyMemberError(Conflict):
    code, detail = "already_member", "This user is already a member of the organization."


class LastOwnerError(Conflict):
    code, detail = "last_owner", "An organization must keep at least one owner."


class SlugTakenError(Conflict):
    code, detail = "slug_taken", "This slug is already used by another organization."


class AlreadyOwnerError(Conflict):
    code, detail = "already_owner", "You already own this organization; name another member."


class InvitationNotFoundError(NotFound):
    code, detail = "invitation_not_found", "The invitation is unknown, expired, revoked or already accepted."


class InvitationEmailMismatchError(Forbidden):
    code, detail = "invitation_email_mismatch", "This invitation was sent to another email address."


class SoleOwnerError(Conflict):
    """Deleting a user who is the last owner of an organization where others remain (app/users/lifecycle.py)."""

    code, detail = (
        "sole_owner",
        "This account is the last owner of an organization with other members: transfer its ownership (or "
        "delete the organization) first. Admins may delete such organizations with the user (?force=true).",
    )


class ApiKeyNotFoundError(NotFound):
    code, detail = "api_key_not_found", "API key not found (or already revoked)."
