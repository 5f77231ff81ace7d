"""edge_certificates: which certificate each edge serves

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edge_certificates",
        sa.Column("edge_id", sa.String(64), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("edge_id", "domain", name="pk_edge_certificates"),
    )
    op.create_index("ix_edge_certificates_domain", "edge_certificates", ["domain"])


def downgrade() -> None:
    op.drop_index("ix_edge_certificates_domain", "edge_certificates")
    op.drop_table("edge_certificates")
