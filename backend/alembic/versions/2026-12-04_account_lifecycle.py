"""account lifecycle: Supabase tombstones of deleted accounts; indexes for cleanup and account deletion

Revision ID: 0005_account_lifecycle
Revises: 0004_mfa
Create Date: 2026-12-04 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_account_lifecycle"
down_revision: str | None = "0004_mfa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, column): each cleanup batch and each account deletion finds its rows through one of these.
INDEXES = [
    ("ix_auth_sessions_revoked_at", "auth_sessions", "revoked_at"),
    ("ix_email_tokens_expires_at", "email_tokens", "expires_at"),
    ("ix_email_tokens_used_at", "email_tokens", "used_at"),
    ("ix_invitations_expires_at", "invitations", "expires_at"),
    ("ix_invitations_invited_by", "invitations", "invited_by"),
]


def upgrade() -> None:
    op.create_table(
        "deleted_supabase_identities",
        sa.Column("supabase_id", sa.Uuid(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("supabase_id", name=op.f("pk_deleted_supabase_identities")),
    )
    op.create_index(
        "ix_deleted_supabase_identities_deleted_at", "deleted_supabase_identities", ["deleted_at"], unique=False
    )
    for name, table, column in INDEXES:
        op.create_index(name, table, [column], unique=False)


def downgrade() -> None:
    for name, table, _column in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index("ix_deleted_supabase_identities_deleted_at", table_name="deleted_supabase_identities")
    op.drop_table("deleted_supabase_identities")
