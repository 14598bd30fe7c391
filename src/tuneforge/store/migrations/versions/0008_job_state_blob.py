"""job_state_blob: where a job's resumable state is published in a remote blob store

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (as 0003): a batch rebuild of `jobs` would cascade into its events.
    op.add_column('jobs', sa.Column('state_key', sa.String(length=256), nullable=True))
    op.add_column('jobs', sa.Column('state_step', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('state_step')
        batch.drop_column('state_key')
