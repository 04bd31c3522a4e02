"""Jobs keep their run time: seconds of ended runs and when the current run began.

A job's duration then counts the spans it trained or ran, not the time between an interrupted run
and its resume. Rows from before keep both NULL and show first start to last end, as before.

Revision ID: 0002_job_run_time
Revises: 0001_initial
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_job_run_time"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nf_jobs", sa.Column("run_s", sa.Float(), nullable=True))
    op.add_column("nf_jobs", sa.Column("active_since", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nf_jobs") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("active_since")
        batch.drop_column("run_s")
