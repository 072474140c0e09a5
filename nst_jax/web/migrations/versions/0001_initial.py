"""The first tables: jobs and gallery.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
  op.create_table(
      "jobs",
      sa.Column("id", sa.String(32), primary_key=True),
      sa.Column("owner", sa.String(64), nullable=False),
      sa.Column("kind", sa.String(16), nullable=False),
      sa.Column("params", sa.JSON(), nullable=False),
      sa.Column("content_key", sa.String(80)),
      sa.Column("style_key", sa.String(80)),
      sa.Column("result_key", sa.String(80)),
      sa.Column("preview_key", sa.String(80)),
      sa.Column("status", sa.String(16), nullable=False),
      sa.Column("iteration", sa.Integer(), nullable=False),
      sa.Column("total", sa.Integer(), nullable=False),
      sa.Column("start_iteration", sa.Integer(), nullable=False),
      sa.Column("loss", sa.Float()),
      sa.Column("eta_s", sa.Float()),
      sa.Column("error", sa.Text()),
      sa.Column("email", sa.String(254)),
      sa.Column("worker", sa.String(128)),
      sa.Column("attempts", sa.Integer(), nullable=False),
      sa.Column("created_at", sa.Float(), nullable=False),
      sa.Column("started_at", sa.Float()),
      sa.Column("finished_at", sa.Float()),
      sa.Column("heartbeat_at", sa.Float()),
  )
  op.create_index("ix_jobs_owner", "jobs", ["owner"])
  op.create_index("ix_jobs_status", "jobs", ["status"])
  op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
  op.create_table(
      "gallery",
      sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
      sa.Column("job_id", sa.String(32)),
      sa.Column("owner", sa.String(64), nullable=False),
      sa.Column("title", sa.String(200), nullable=False),
      sa.Column("method", sa.String(16), nullable=False),
      sa.Column("settings", sa.JSON(), nullable=False),
      sa.Column("result_key", sa.String(80), nullable=False),
      sa.Column("content_key", sa.String(80)),
      sa.Column("style_key", sa.String(80)),
      sa.Column("thumb_key", sa.String(80)),
      sa.Column("created_at", sa.Float(), nullable=False),
  )
  op.create_index("ix_gallery_owner", "gallery", ["owner"])
  op.create_index("ix_gallery_created_at", "gallery", ["created_at"])


def downgrade() -> None:
  op.drop_table("gallery")
  op.drop_table("jobs")
