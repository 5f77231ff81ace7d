"""tracking_logs and tracking_domains

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tracking_logs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("campaign_id", sa.String(256), nullable=False),
        sa.Column("recipient_id", sa.String(256), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("ip", sa.String(45)),
        sa.Column("user_agent", sa.Text()),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("bot_reason", sa.String(100)),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_logs"),
        sa.UniqueConstraint("event_id", name="uq_tracking_logs_event_id"),
    )
    op.create_index("ix_tracking_logs_campaign_id_clicked_at", "tracking_logs",
                    ["campaign_id", "clicked_at"])
    op.create_index("ix_tracking_logs_customer_id_clicked_at", "tracking_logs",
                    ["customer_id", "clicked_at"])
    op.create_table(
        "tracking_domains",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("matched_by", sa.String(16)),
        sa.Column("last_error", sa.Text()),
        sa.Column("certificate_expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_domains"),
        sa.UniqueConstraint("name", name="uq_tracking_domains_name"),
        sa.CheckConstraint(
            "status IN ('pending', 'verified', 'active', 'rejected', 'lapsed')",
            name="ck_tracking_domains_status",
        ),
    )
    op.create_index("ix_tracking_domains_customer_id", "tracking_domains", ["customer_id"])


def downgrade() -> None:
    op.drop_table("tracking_domains")
    op.drop_table("tracking_logs")
