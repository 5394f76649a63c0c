"""trigram indexes without a pending list: fastupdate off

With GIN's default fastupdate, new and changed users wait in an unsorted pending list (up to
gin_pending_list_limit, 4 MB) until a vacuum or an overflowing insert merges it; until then every
/admin/users?search= reads the whole list (3,000 pending users: +3 ms per statement, two statements per
request). Without it an insert puts its trigrams straight into the index (about 0.2 ms more per written user).
The pending list left from before is merged now. PostgreSQL only: SQLite has no trigram indexes.

Revision ID: 0003_trgm_fastupdate_off
Revises: 0002_supabase_identity
Create Date: 2026-11-22 02:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_trgm_fastupdate_off"
down_revision: str | None = "0002_supabase_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = ("ix_users_email_trgm", "ix_users_full_name_trgm")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in INDEXES:
            op.execute(f"ALTER INDEX {name} SET (fastupdate = off)")
            op.execute(f"SELECT gin_clean_pending_list('{name}'::regclass)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in INDEXES:
            op.execute(f"ALTER INDEX {name} RESET (fastupdate)")
