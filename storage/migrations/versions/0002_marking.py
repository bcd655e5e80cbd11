"""Marking: exam sessions; a response's session and file name; a mark's role, phase and what was seen before it;
text columns as wide as the UI lets text be (a task part: 64, was 32); agreement optional (a blind mark has none).

Every existing mark becomes what it was: a first mark by an examiner who had seen the model (what was shown is not
recorded: `seen` stays NULL).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def enum(*values: str, name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=max(map(len, values)))


AGREEMENT = enum("agree", "partly", "disagree", name="agreement")
ROLE = enum("examiner", "adjudicator", "admin", name="role")  # values as storage.models has them today
PHASE = enum("first", "second", "adjudication", name="phase")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("double_marking", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("double_marking >= 0 AND double_marking <= 1", name=op.f("ck_sessions_double_marking")),
        sa.CheckConstraint("threshold IS NULL OR threshold >= 0", name=op.f("ck_sessions_threshold")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("name", name=op.f("uq_sessions_name")))
    op.create_index(op.f("ix_sessions_created_at"), "sessions", ["created_at"])

    with op.batch_alter_table("responses") as batch:
        batch.alter_column("part", existing_type=sa.String(length=32), type_=sa.String(length=64),
                           existing_nullable=True)
        batch.add_column(sa.Column("session_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("file_name", sa.String(length=255), nullable=True))
        batch.create_foreign_key(op.f("fk_responses_session_id"), "sessions", ["session_id"], ["id"])
        batch.create_index(op.f("ix_responses_session_id"), ["session_id"])

    with op.batch_alter_table("overrides") as batch:
        batch.alter_column("agreement", existing_type=AGREEMENT, nullable=True)
        batch.add_column(sa.Column("role", ROLE, server_default="examiner", nullable=False))
        batch.add_column(sa.Column("phase", PHASE, server_default="first", nullable=False))
        batch.add_column(sa.Column("model_seen", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.add_column(sa.Column("seen", sa.JSON(), nullable=True))
        batch.create_index(op.f("ix_overrides_phase"), ["phase"])


def downgrade() -> None:
    """Back to 0001, keeping first marks only as they were (later phases' marks are kept too, as plain overrides);
    it fails on a blind mark (no agreement) or a task part longer than 32 characters, rather than drop them."""
    with op.batch_alter_table("overrides") as batch:
        batch.drop_index(op.f("ix_overrides_phase"))
        batch.drop_column("seen")
        batch.drop_column("model_seen")
        for column in ("phase", "role"):  # a named CHECK is not linked to its column: drop it first (batch mode)
            batch.drop_constraint(op.f(f"ck_overrides_{column}"), type_="check")
            batch.drop_column(column)
        batch.alter_column("agreement", existing_type=AGREEMENT, nullable=False)
    with op.batch_alter_table("responses") as batch:
        batch.drop_index(op.f("ix_responses_session_id"))
        batch.drop_constraint(op.f("fk_responses_session_id"), type_="foreignkey")
        batch.drop_column("file_name")
        batch.drop_column("session_id")
        batch.alter_column("part", existing_type=sa.String(length=64), type_=sa.String(length=32),
                           existing_nullable=True)
    op.drop_table("sessions")
