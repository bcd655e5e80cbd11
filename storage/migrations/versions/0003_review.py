"""A grade's review reasons and reference check, as the grader gave them (grader.Assessment): the codes an
examiner's queue and the Agreement tab filter on (`reference_mismatch`: the answer does not read its reference text).
Grades stored before this revision have none recorded (NULL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grades") as batch:
        batch.add_column(sa.Column("review", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grades") as batch:
        batch.drop_column("review")
