"""integrations and accounting: webhook endpoints, the delivery outbox, usage records, job estimates

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite supports it for nullable columns): a batch rebuild of `jobs` would
    # drop the table, and with foreign keys on that cascades into its events and checkpoints.
    op.add_column('jobs', sa.Column('estimated_trained_tokens', sa.BigInteger(), nullable=True))
    op.add_column('jobs', sa.Column('estimated_cost', sa.Float(), nullable=True))
    op.add_column('jobs', sa.Column('training_price', sa.Float(), nullable=True))
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_endpoints_project_id', 'webhook_endpoints', ['project_id'])
    op.create_table('deliveries',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('endpoint_id', sa.String(length=64), nullable=True),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.BigInteger(), nullable=False),
    sa.Column('last_status', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.Column('delivered_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_deliveries_endpoint_id', 'deliveries', ['endpoint_id'])
    op.create_index('ix_deliveries_job_id', 'deliveries', ['job_id'])
    op.create_index('ix_deliveries_status_next', 'deliveries', ['status', 'next_attempt_at'])
    op.create_table('usage_records',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=512), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_index('ix_usage_records_created', 'usage_records', ['created_at'])
    op.create_index('ix_usage_records_project_created', 'usage_records',
                    ['project_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_usage_records_project_created', table_name='usage_records')
    op.drop_index('ix_usage_records_created', table_name='usage_records')
    op.drop_table('usage_records')
    op.drop_index('ix_deliveries_status_next', table_name='deliveries')
    op.drop_index('ix_deliveries_job_id', table_name='deliveries')
    op.drop_index('ix_deliveries_endpoint_id', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index('ix_webhook_endpoints_project_id', table_name='webhook_endpoints')
    op.drop_table('webhook_endpoints')
    op.drop_column('jobs', 'training_price')
    op.drop_column('jobs', 'estimated_cost')
    op.drop_column('jobs', 'estimated_trained_tokens')
