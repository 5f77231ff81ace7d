"""tracking_logs: every reason of a click, and classifications waiting for their click

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row, however large the table.
    with op.batch_alter_table("tracking_logs") as table:
        table.add_column(sa.Column("reasons", sa.Text()))
        table.add_column(sa.Column("reclassified_at", sa.DateTime(timezone=True)))
    op.create_table(
        "click_classifications",
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.Text()),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("event_id", name="pk_click_classifications"),
    )


def downgrade() -> None:
    op.drop_table("click_classifications")
    with op.batch_alter_table("tracking_logs") as table:
        table.drop_column("reclassified_at")
        table.drop_column("reasons")
