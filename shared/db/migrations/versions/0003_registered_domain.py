"""tracking_domains: registered domain and the shared-fate warning

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from shared.domains import registered_domain

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracking_domains") as table:
        table.add_column(sa.Column("registered_domain", sa.String(253)))
        table.add_column(sa.Column("isolation_warning", sa.Text()))
    op.create_index("ix_tracking_domains_registered_domain", "tracking_domains",
                    ["registered_domain"])
    # Existing rows get theirs now, so the next verification compares against them too.
    domains = sa.table("tracking_domains", sa.column("id", sa.BigInteger()),
                       sa.column("name", sa.String()),
                       sa.column("registered_domain", sa.String()))
    connection = op.get_bind()
    rows = connection.execute(sa.select(domains.c.id, domains.c.name)).all()
    if rows:
        connection.execute(
            domains.update().where(domains.c.id == sa.bindparam("b_id"))
            .values(registered_domain=sa.bindparam("b_domain")),
            [{"b_id": row.id, "b_domain": registered_domain(row.name)} for row in rows])


def downgrade() -> None:
    op.drop_index("ix_tracking_domains_registered_domain", "tracking_domains")
    with op.batch_alter_table("tracking_domains") as table:
        table.drop_column("isolation_warning")
        table.drop_column("registered_domain")
