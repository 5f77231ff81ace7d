"""destination watch: verdicts on clicked destinations, and listings told to customers

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "destination_checks",
        sa.Column("destination", sa.String(253), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("categories", sa.Text()),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("destination", name="pk_destination_checks"),
    )
    op.create_table(
        "destination_listings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("destination", sa.String(253), nullable=False),
        sa.Column("blocklist", sa.String(16), nullable=False),
        sa.Column("categories", sa.Text()),
        sa.Column("campaign_id", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_destination_listings"),
        sa.UniqueConstraint("customer_id", "destination", "blocklist",
                            name="uq_destination_listings_customer_id_destination_blocklist"),
    )
    op.create_index("ix_destination_listings_first_seen_at", "destination_listings",
                    ["first_seen_at"])


def downgrade() -> None:
    op.drop_table("destination_listings")
    op.drop_table("destination_checks")
