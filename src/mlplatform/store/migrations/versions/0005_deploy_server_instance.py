"""deploy servers belong to an MLflow instance

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deploy_servers") as batch_op:
        batch_op.add_column(
            sa.Column(
                "instance", sa.String(64), nullable=False, server_default="default"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("deploy_servers") as batch_op:
        batch_op.drop_column("instance")
