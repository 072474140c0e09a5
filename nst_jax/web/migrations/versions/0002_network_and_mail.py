"""Jobs remember the (keyed hash of the) network they came from, for the per-IP limits, and
whether their completion e-mail went out; gallery items may be hidden by an administrator.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
  with op.batch_alter_table("jobs") as batch:
    batch.add_column(sa.Column("network", sa.String(32)))
    batch.create_index("ix_jobs_network", ["network"])
    batch.add_column(sa.Column("email_status", sa.String(200)))
  with op.batch_alter_table("gallery") as batch:
    batch.add_column(sa.Column("hidden", sa.Boolean(), nullable=False,
                               server_default=sa.false()))
    batch.create_index("ix_gallery_job_id", ["job_id"])


def downgrade() -> None:
  with op.batch_alter_table("gallery") as batch:
    batch.drop_index("ix_gallery_job_id")
    batch.drop_column("hidden")
  with op.batch_alter_table("jobs") as batch:
    batch.drop_index("ix_jobs_network")
    batch.drop_column("network")
    batch.drop_column("email_status")
