"""api_keys: organization API keys; audit_events.actor_api_key_id

Revision ID: 0006_api_keys
Revises: 0005_account_lifecycle
Create Date: 2026-12-04 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_api_keys"
down_revision: str | None = "0005_account_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_api_keys_org_id_organizations"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_api_keys_created_by_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index("ix_api_keys_org_id_created_at", "api_keys", ["org_id", "created_at"], unique=False)
    op.create_index("ix_api_keys_created_by", "api_keys", ["created_by"], unique=False)
    # Plain ADD COLUMN (nullable, no default) is native on SQLite: no batch rebuild.
    op.add_column("audit_events", sa.Column("actor_api_key_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    # DROP COLUMN is native on SQLite >= 3.35 (no batch rebuild).
    op.drop_column("audit_events", "actor_api_key_id")
    op.drop_index("ix_api_keys_created_by", table_name="api_keys")
    op.drop_index("ix_api_keys_org_id_created_at", table_name="api_keys")
    op.drop_table("api_keys")
