"""0006 drops jobs.hyperparameters, keeping the values in jobs.method (and back on downgrade)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tuneforge.store.db import MIGRATIONS_DIR


def test_upgrade_keeps_the_values_in_method_and_downgrade_restores_them(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(
            sa.text(
                "INSERT INTO projects (id, name, organization_id, created_at, settings) VALUES ('p', 'p', 'o', 0, '{}')"
            )
        )
        for jid, method, hp in [
            (
                "a",
                {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
                {"n_epochs": 2},
            ),
            ("b", {}, {"n_epochs": 4, "batch_size": 1}),  # only the column had them
        ]:
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, project_id, status, model, base_model, training_file, method,"
                    " hyperparameters, seed, result_files, created_at, updated_at, attempts) VALUES "
                    "(:id, 'p', 'queued', 'm', 'm', 'f', :method, :hp, 0, '[]', 0, 0, 0)"
                ),
                {"id": jid, "method": json.dumps(method), "hp": json.dumps(hp)},
            )
        command.upgrade(cfg, "0006")
        rows = dict(conn.execute(sa.text("SELECT id, method FROM jobs")).all())
        assert "hyperparameters" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
        assert json.loads(rows["a"])["supervised"]["hyperparameters"] == {"n_epochs": 2}
        assert json.loads(rows["b"]) == {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 1}},
        }
        command.downgrade(cfg, "0004")
        back = dict(conn.execute(sa.text("SELECT id, hyperparameters FROM jobs")).all())
        assert json.loads(back["b"]) == {"n_epochs": 4, "batch_size": 1}
