"""certificate store: certificates, HTTP-01 answers and the ACME account in the database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("key_kid", sa.String(32), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ari_id", sa.String(512)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", name="pk_certificates"),
        sa.ForeignKeyConstraint(["name"], ["tracking_domains.name"], ondelete="CASCADE",
                                name="fk_certificates_name_tracking_domains"),
    )
    op.create_index("ix_certificates_key_kid", "certificates", ["key_kid"])
    op.create_table(
        "acme_challenges",
        sa.Column("token", sa.String(256), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("validation", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name="pk_acme_challenges"),
    )
    op.create_index("ix_acme_challenges_expires_at", "acme_challenges", ["expires_at"])
    op.create_table(
        "acme_accounts",
        sa.Column("server", sa.String(512), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("kid", sa.String(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("server", name="pk_acme_accounts"),
    )


def downgrade() -> None:
    op.drop_table("acme_accounts")
    op.drop_index("ix_acme_challenges_expires_at", "acme_challenges")
    op.drop_table("acme_challenges")
    op.drop_index("ix_certificates_key_kid", "certificates")
    op.drop_table("certificates")
