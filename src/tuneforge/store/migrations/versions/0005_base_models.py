"""base_models, model_aliases: base models registered with `tuneforge models add`

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'base_models',
        sa.Column('name', sa.String(length=256), nullable=False),
        sa.Column('source', sa.String(length=1024), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'model_aliases',
        sa.Column('name', sa.String(length=256), nullable=False),
        sa.Column('base_model', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['base_model'], ['base_models.name'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_index('ix_model_aliases_base_model', 'model_aliases', ['base_model'])


def downgrade() -> None:
    op.drop_index('ix_model_aliases_base_model', table_name='model_aliases')
    op.drop_table('model_aliases')
    op.drop_table('base_models')
