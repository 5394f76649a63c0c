"""Imports every domain's models so that metadata (Alembic, tests) sees all tables."""

from app.audit.models import AuditEvent
from app.auth.models import AuthSession, EmailToken, MfaChallenge, MfaFactor, MfaRecoveryCode
from app.credits.models import CreditTransaction
from app.orgs.models import ApiKey, Invitation, Membership, Organization
from app.users.models import DeletedSupabaseIdentity, Profile, User

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "CreditTransaction",
    "DeletedSupabaseIdentity",
    "EmailToken",
    "Invitation",
    "Membership",
    "MfaChallenge",
    "MfaFactor",
    "MfaRecoveryCode",
    "Organization",
    "Profile",
    "User",
]
