"""api key cleanup: indexes on api_keys.expires_at and revoked_at (retention batches, app/cleanup.py)

Revision ID: 0007_api_key_cleanup
Revises: 0006_api_keys
Create Date: 2026-12-04 16:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_api_key_cleanup"
down_revision: str | None = "0006_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_api_keys_expires_at", "api_keys", ["expires_at"], unique=False)
    op.create_index("ix_api_keys_revoked_at", "api_keys", ["revoked_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_api_keys_revoked_at", table_name="api_keys")
    op.drop_index("ix_api_keys_expires_at", table_name="api_keys")
