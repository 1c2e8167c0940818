"""deploy server size tier

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deploy_servers") as batch_op:
        batch_op.add_column(
            sa.Column("size", sa.String(16), nullable=False, server_default="mid")
        )


def downgrade() -> None:
    with op.batch_alter_table("deploy_servers") as batch_op:
        batch_op.drop_column("size")
