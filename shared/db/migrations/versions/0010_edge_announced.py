"""edge_certificates.announced: whether certificate.installed went out for the row's serial

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("edge_certificates", sa.Column(
        "announced", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Rows written before this column were announced as they were written (a failed
    # announcement then was lost with no trace: nothing to redo here).
    op.execute("UPDATE edge_certificates SET announced = true")


def downgrade() -> None:
    op.drop_column("edge_certificates", "announced")
