"""uploads.file_expires_after: an Upload's `expires_after`, applied to the File it produces

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): no batch rebuild of a table other rows point at.
    op.add_column('uploads', sa.Column('file_expires_after', sa.BigInteger(), nullable=True))
    # The sweeper looks for expired files; without this it would scan the whole table.
    op.create_index('ix_files_expires_at', 'files', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_files_expires_at', table_name='files')
    op.drop_column('uploads', 'file_expires_after')
