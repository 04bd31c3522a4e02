"""Initial schema: jobs, candidates, strategy checkpoints, cross-job metrics cache.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nf_jobs",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_nf_jobs_name", "nf_jobs", ["name"])
    op.create_table(
        "nf_candidates",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), sa.ForeignKey("nf_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("arch", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=True),
        sa.Column("device", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(256), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("pareto", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("job_id", "key", name="uq_nf_candidates_job_key"),
    )
    op.create_index("ix_nf_candidates_job_seq", "nf_candidates", ["job_id", "seq"])
    op.create_index("ix_nf_candidates_job_status", "nf_candidates", ["job_id", "status"])
    op.create_table(
        "nf_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), sa.ForeignKey("nf_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "step", name="uq_nf_checkpoints_job_step"),
    )
    op.create_table(
        "nf_metrics_cache",
        sa.Column("arch_key", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(256), primary_key=True),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nf_metrics_cache")
    op.drop_table("nf_checkpoints")
    op.drop_index("ix_nf_candidates_job_status", "nf_candidates")
    op.drop_index("ix_nf_candidates_job_seq", "nf_candidates")
    op.drop_table("nf_candidates")
    op.drop_index("ix_nf_jobs_name", "nf_jobs")
    op.drop_table("nf_jobs")
