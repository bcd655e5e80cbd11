"""Initial tables: responses, grades, overrides.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audio_sha256", sa.String(length=64), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("part", sa.String(length=32), nullable=True),
        sa.Column("candidate_id", sa.String(length=128), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("audio_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")))
    for column in ("audio_sha256", "candidate_id", "created_at", "part"):
        op.create_index(op.f(f"ix_responses_{column}"), "responses", [column])

    op.create_table(
        "grades",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=255), nullable=False),
        sa.Column("scale_name", sa.String(length=64), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("headline", sa.String(length=64), nullable=True),
        sa.Column("regression", sa.Double(), nullable=True),
        sa.Column("soft", sa.Double(), nullable=True),
        sa.Column("hard", sa.Double(), nullable=True),
        sa.Column("scorable", sa.Boolean(), nullable=False),
        sa.Column("gate_reason", sa.Text(), nullable=True),
        sa.Column("gate_measures", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("latency_s", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["response_id"], ["responses.id"], name=op.f("fk_grades_response_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grades")))
    for column in ("created_at", "response_id"):
        op.create_index(op.f(f"ix_grades_{column}"), "grades", [column])

    op.create_table(
        "overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("override_uuid", sa.String(length=36), nullable=False),
        sa.Column("grade_id", sa.Integer(), nullable=False),
        sa.Column("examiner", sa.String(length=128), nullable=False),
        sa.Column("final_score", sa.Double(), nullable=False),
        sa.Column("agreement", sa.Enum("agree", "partly", "disagree", name="agreement", native_enum=False,
                                       create_constraint=True, length=8), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["grade_id"], ["grades.id"], name=op.f("fk_overrides_grade_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_overrides")),
        sa.UniqueConstraint("override_uuid", name=op.f("uq_overrides_override_uuid")))
    for column in ("created_at", "examiner", "grade_id"):
        op.create_index(op.f(f"ix_overrides_{column}"), "overrides", [column])


def downgrade() -> None:
    for table in ("overrides", "grades", "responses"):
        op.drop_table(table)  # its indexes go with it
