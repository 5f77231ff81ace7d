"""domain_reputation: what each DNS blocklist says about each watched name

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "domain_reputation",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("blocklist", sa.String(16), nullable=False),
        sa.Column("zone", sa.String(253), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("categories", sa.Text()),
        sa.Column("raw", sa.Text()),
        sa.Column("fix_url", sa.Text()),
        sa.Column("first_listed_at", sa.DateTime(timezone=True)),
        sa.Column("last_checked_at", sa.DateTime(timezone=True)),
        sa.Column("last_changed_at", sa.DateTime(timezone=True)),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_domain_reputation"),
        sa.CheckConstraint("status IN ('unchecked', 'listed', 'not_listed')",
                           name="ck_domain_reputation_status"),
    )
    op.create_index("ix_domain_reputation_name_blocklist", "domain_reputation",
                    ["name", "blocklist"], unique=True)
    op.create_index("ix_domain_reputation_blocklist_next_check_at", "domain_reputation",
                    ["blocklist", "next_check_at"])
    op.create_index("ix_domain_reputation_status", "domain_reputation", ["status"])


def downgrade() -> None:
    op.drop_table("domain_reputation")
