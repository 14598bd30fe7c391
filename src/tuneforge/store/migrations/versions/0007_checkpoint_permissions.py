"""checkpoint_permissions: fine-tuned models and checkpoints shared with other projects

Revision ID: 0007
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'checkpoint_permissions',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('model_id', sa.String(length=512), nullable=False),
        sa.Column('project_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['model_id'], ['fine_tuned_models.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('model_id', 'project_id'),
    )
    op.create_index('ix_checkpoint_permissions_model_id', 'checkpoint_permissions', ['model_id'])
    op.create_index('ix_checkpoint_permissions_project_id', 'checkpoint_permissions',
                    ['project_id'])


def downgrade() -> None:
    op.drop_index('ix_checkpoint_permissions_project_id', table_name='checkpoint_permissions')
    op.drop_index('ix_checkpoint_permissions_model_id', table_name='checkpoint_permissions')
    op.drop_table('checkpoint_permissions')
