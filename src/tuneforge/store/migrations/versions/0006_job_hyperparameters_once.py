"""jobs.hyperparameters dropped: a job's hyperparameters live once, in jobs.method

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('method', sa.JSON),
                sa.column('hyperparameters', sa.JSON))

def _method_values(method):
    method = method or {}
    kind = method.get('type', 'supervised')
    return (method.get(kind) or {}).get('hyperparameters')

def upgrade() -> None:
    # The two columns always held the same values; keep the method's, filling it from the
    # column only where a row has none (rows written by hand, tests).
    conn = op.get_bind()
    for row in conn.execute(sa.select(jobs.c.id, jobs.c.method, jobs.c.hyperparameters)).all():
        if _method_values(row.method) is None and row.hyperparameters:
            method = dict(row.method or {})
            kind = method.setdefault('type', 'supervised')
            method[kind] = {**(method.get(kind) or {}), 'hyperparameters': dict(row.hyperparameters)}
            conn.execute(jobs.update().where(jobs.c.id == row.id).values(method=method))
    # Plain DROP COLUMN (SQLite >= 3.35, PostgreSQL): no batch rebuild of a table other rows
    # point at.
    op.drop_column('jobs', 'hyperparameters')

def downgrade() -> None:
    op.add_column('jobs', sa.Column('hyperparameters', sa.JSON(), nullable=True))
    conn = op.get_bind()
    for row in conn.execute(sa.select(jobs.c.id, jobs.c.method)).all():
        conn.execute(jobs.update().where(jobs.c.id == row.id)
                     .values(hyperparameters=_method_values(row.method) or {}))
