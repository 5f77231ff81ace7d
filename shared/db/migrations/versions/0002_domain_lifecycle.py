"""domain lifecycle: DNS chain, check schedule, certificate details, ACME accounting

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tracking_domains") as table:
        table.add_column(sa.Column("dns_chain", sa.Text()))
        table.add_column(sa.Column("check_due_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("certificate_issued_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("certificate_serial", sa.String(64)))
        table.add_column(sa.Column("certificate_renew_at", sa.DateTime(timezone=True)))
    op.create_index("ix_tracking_domains_check_due_at", "tracking_domains", ["check_due_at"])
    op.create_index("ix_tracking_domains_certificate_renew_at", "tracking_domains",
                    ["certificate_renew_at"])
    op.create_table(
        "acme_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("registered_domain", sa.String(253), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_acme_events"),
    )
    op.create_index("ix_acme_events_kind_at", "acme_events", ["kind", "at"])
    op.create_index("ix_acme_events_registered_domain_kind_at", "acme_events",
                    ["registered_domain", "kind", "at"])
    op.create_index("ix_acme_events_name_kind_at", "acme_events", ["name", "kind", "at"])


def downgrade() -> None:
    op.drop_table("acme_events")
    op.drop_index("ix_tracking_domains_certificate_renew_at", "tracking_domains")
    op.drop_index("ix_tracking_domains_check_due_at", "tracking_domains")
    with op.batch_alter_table("tracking_domains") as table:
        for column in ("certificate_renew_at", "certificate_serial", "certificate_issued_at",
                       "check_due_at", "dns_chain"):
            table.drop_column(column)
