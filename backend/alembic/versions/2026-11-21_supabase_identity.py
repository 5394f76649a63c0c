"""supabase identity: users.supabase_id

The Supabase user (`sub`) an account answers to, looked up by one unique index on every Supabase request.

Revision ID: 0002_supabase_identity
Revises: 0001_initial
Create Date: 2026-11-21 23:59:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_supabase_identity"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN + CREATE UNIQUE INDEX work natively on SQLite too: no batch table rebuild (which,
    # with foreign keys on, would cascade-delete the rows that reference users).
    op.add_column("users", sa.Column("supabase_id", sa.Uuid(), nullable=True))
    op.create_index("ix_users_supabase_id", "users", ["supabase_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_users_supabase_id", table_name="users")
    op.drop_column("users", "supabase_id")
