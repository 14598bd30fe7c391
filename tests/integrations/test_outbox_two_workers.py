"""Two worker processes (`tuneforge worker`, as on two machines) drain one outbox: every webhook
and every e-mail arrives exactly once, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for
from tuneforge.services import jobs as jobs_service
from tuneforge.services.projects import update_settings
from tuneforge.services.webhooks import add_endpoint
from tuneforge.store.db import transaction

from .test_outbox import deliveries

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))
JOBS = 12


def test_two_worker_processes_deliver_each_notification_once(
    settings, db, project, create_job, receiver, smtp_server, tmp_path
):
    with transaction(db) as s:
        add_endpoint(s, receiver.url, project="acme")
        update_settings(s, "acme", notify_email="ml-team@example.org")
    job_ids = [create_job() for _ in range(JOBS)]
    for job_id in job_ids:  # one webhook and one e-mail each, all due at once
        with transaction(db) as s:
            jobs_service.cancel_job(s, project.id, job_id)
    assert len(deliveries(db)) == 2 * JOBS

    env = {
        "TUNEFORGE_DATA_DIR": str(settings.data_dir),
        "TUNEFORGE_DATABASE_URL": settings.database_url,
        "TUNEFORGE_WORKER_CONCURRENCY": "0",  # senders only: no training
        "TUNEFORGE_WORKER_POLL_SECONDS": "0.1",
        "TUNEFORGE_DELIVERY_POLL_SECONDS": "0.05",
        "TUNEFORGE_SMTP_HOST": smtp_server.host,
        "TUNEFORGE_SMTP_PORT": str(smtp_server.port),
    }
    procs = []
    for i in range(2):
        log = open(tmp_path / f"worker{i}.log", "wb")  # noqa: SIM115 - closed below
        procs.append(
            (subprocess.Popen([TUNEFORGE, "worker"], env={**os.environ, **env}, stdout=log, stderr=log), log)
        )
    try:
        wait_for(
            lambda: all(d.status == "delivered" for d in deliveries(db)),
            120,
            "every delivery to be delivered",
        )
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(30)
            log.close()

    hooks = sorted(h["webhook-id"] for h, _ in receiver.requests)
    assert len(hooks) == JOBS and len(set(hooks)) == JOBS  # once each, none twice
    subjects = sorted(msg["Subject"] for _, _, msg in smtp_server.messages)
    assert subjects == sorted(f"[tuneforge] Fine-tuning job {j} cancelled" for j in job_ids)
    assert all(d.attempts == 1 for d in deliveries(db))
