"""Usage and cost accounting (service + GET /v1/usage), per-key rate limits (429 envelope and
Retry-After), and Prometheus /metrics, through the real app and database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneforge.app import create_app
from tuneforge.config import ModelPrice
from tuneforge.ids import now
from tuneforge.services import usage
from tuneforge.services.keys import create_key
from tuneforge.services.ratelimit import RateLimiter, charge_current
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job

PRICES = {
    "default": ModelPrice(training=3.0, input=0.5, output=1.5),
    "tuneforge-tiny": ModelPrice(training=10.0, input=1.0, output=2.0),
}


def finish(db, job_id, tokens, *, price=None, at=None):
    """Mark a job succeeded with `tokens` trained (what the runner records)."""
    with transaction(db) as s:
        job = s.get(Job, job_id)
        job.status, job.trained_tokens, job.training_price = "succeeded", tokens, price
        job.finished_at = at or now()


def test_report_per_project_and_model(settings, db, project, create_job):
    settings = settings.model_copy(update={"prices": PRICES})
    with transaction(db) as s:
        other = create_key(s, "beta")[0].project_id
    finish(db, create_job(), 1000, price=10.0)
    finish(db, create_job(), 500, price=20.0)  # quoted at another price: keeps it
    finish(db, create_job(project_id=other), 300)  # never quoted: tokens, no cost
    finish(db, create_job(), 999, at=now() - 90 * 86400)  # outside the default 30 days
    create_job()  # not finished: no tokens
    for project_id, model, p, c in [
        (project.id, "tuneforge-tiny", 100, 20),
        (project.id, "ft:tuneforge-tiny:acme::abc", 40, 10),
        (other, "my-base", 1_000_000, 0),
    ]:
        usage.record_inference(
            db, project_id=project_id, key_id="key_x", model=model, prompt_tokens=p, completion_tokens=c
        )

    with db() as s:
        r = usage.report(s, settings)
    lines = {(line.project, line.model): line for line in r.lines}
    assert set(lines) == {
        ("acme", "tuneforge-tiny"),
        ("acme", "ft:tuneforge-tiny:acme::abc"),
        ("beta", "tuneforge-tiny"),
        ("beta", "my-base"),
    }
    tiny = lines[("acme", "tuneforge-tiny")]
    assert (tiny.jobs, tiny.trained_tokens) == (2, 1500)
    assert tiny.training_cost == pytest.approx(1000 * 10 / 1e6 + 500 * 20 / 1e6)
    assert (tiny.requests, tiny.prompt_tokens, tiny.completion_tokens) == (1, 100, 20)
    assert tiny.inference_cost == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)
    ft = lines[("acme", "ft:tuneforge-tiny:acme::abc")]  # an ft: model costs what its base does
    assert ft.inference_cost == pytest.approx((40 * 1.0 + 10 * 2.0) / 1e6)
    # One rule (pricing.training_cost): tokens at the job's quote; the price table is never read back.
    assert lines[("beta", "tuneforge-tiny")].training_cost == 0
    assert lines[("beta", "my-base")].inference_cost == pytest.approx(0.5)  # default price
    assert r.totals.trained_tokens == 1800 and r.totals.prompt_tokens == 1_000_140

    with db() as s:
        by_project = usage.report(s, settings, group_by="project", project_id=project.id)
        old = usage.report(
            s, settings, start_time=now() - 100 * 86400, end_time=now() - 80 * 86400, group_by="model"
        )
    assert [(line.project, line.model, line.trained_tokens, line.requests) for line in by_project.lines] == [
        ("acme", None, 1500, 2)
    ]
    assert [(line.model, line.trained_tokens) for line in old.lines] == [("tuneforge-tiny", 999)]


def test_usage_endpoint_scopes_to_the_key(settings, db, project, create_job):
    settings = settings.model_copy(update={"prices": PRICES})
    with TestClient(create_app(settings)) as client:
        factory = client.app.state.sessionmaker
        with transaction(factory) as s:
            _, member = create_key(s, "acme")
            _, admin = create_key(s, "ops", admin=True)
            _, other = create_key(s, "beta")
        finish(factory, create_job(), 2000, price=10.0)
        usage.record_inference(
            factory,
            project_id=project.id,
            key_id=None,
            model="tuneforge-tiny",
            prompt_tokens=7,
            completion_tokens=3,
        )
        got = client.get(
            "/v1/usage", params={"group_by": "project"}, headers={"Authorization": f"Bearer {member}"}
        ).json()
        assert got["object"] == "list" and got["group_by"] == "project"
        [bucket] = got["data"]
        assert bucket["project"] == "acme" and bucket["model"] is None
        assert (bucket["trained_tokens"], bucket["prompt_tokens"], bucket["completion_tokens"]) == (
            2000,
            7,
            3,
        )
        assert bucket["total_cost"] == pytest.approx(0.02 + 13 / 1e6)
        assert client.get("/v1/usage", headers={"Authorization": f"Bearer {other}"}).json()["data"] == []
        everything = client.get("/v1/usage", headers={"Authorization": f"Bearer {admin}"}).json()
        assert [b["project"] for b in everything["data"]] == ["acme"]
        bad = client.get(
            "/v1/usage", params={"group_by": "day"}, headers={"Authorization": f"Bearer {member}"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        bad = client.get(
            "/v1/usage",
            params={"start_time": 10, "end_time": 5},
            headers={"Authorization": f"Bearer {member}"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "start_time"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_token_buckets_refill_and_charge():
    clock = Clock()
    limiter = RateLimiter(rpm=2, tpm=100, clock=clock)
    assert limiter.acquire("k") is None and limiter.acquire("k") is None
    refused = limiter.acquire("k")
    assert refused.kind == "requests" and refused.retry_after == pytest.approx(30)
    assert limiter.acquire("other-key") is None  # per key
    clock.t += 30
    assert limiter.acquire("k") is None
    token = limiter.bind("k")
    charge_current(150)  # a big completion overdraws
    limiter.unbind(token)
    clock.t += 30
    refused = limiter.acquire("k")
    assert refused.kind == "tokens" and refused.retry_after == pytest.approx((51 - 50) / (100 / 60))
    charge_current(10**6)  # outside a request: no account


def test_rate_limited_requests_get_openai_429(settings):
    settings = settings.model_copy(update={"rate_limit_rpm": 3})
    with TestClient(create_app(settings)) as client:
        with transaction(client.app.state.sessionmaker) as s:
            _, key = create_key(s, "acme")
            _, other = create_key(s, "acme")
        auth = {"Authorization": f"Bearer {key}"}
        codes = [client.get("/v1/fine_tuning/jobs", headers=auth).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = client.get("/v1/files", headers=auth)
        assert r.status_code == 429
        assert r.json()["error"] == {
            "message": "Rate limit reached for requests per minute (RPM) on this API key: limit "
            "3. Please try again in 20s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
        assert 1 <= int(r.headers["retry-after"]) <= 20
        assert 0 < int(r.headers["retry-after-ms"]) <= 20000
        assert r.headers["x-request-id"]
        assert client.get("/v1/files", headers={"Authorization": f"Bearer {other}"}).status_code == 200
        assert client.get("/health").status_code == 200  # operator endpoints: not limited


def test_metrics_count_requests_by_route_and_read_jobs_from_db(settings, db, create_job, project):
    with TestClient(create_app(settings)) as client:
        with transaction(client.app.state.sessionmaker) as s:
            _, key = create_key(s, "acme")
        auth = {"Authorization": f"Bearer {key}"}
        queued = create_job()
        with transaction(client.app.state.sessionmaker) as s:
            s.get(Job, queued).status = "queued"
        finish(client.app.state.sessionmaker, create_job(), 1234)
        usage.record_inference(
            client.app.state.sessionmaker,
            project_id=project.id,
            key_id=None,
            model="tuneforge-tiny",
            prompt_tokens=11,
            completion_tokens=5,
        )
        client.get(f"/v1/fine_tuning/jobs/{queued}", headers=auth)
        client.get("/v1/fine_tuning/jobs/ftjob-nope", headers=auth)
        text = client.get("/metrics").text
    assert (
        'tuneforge_http_requests_total{method="GET",route="/v1/fine_tuning/jobs/{job_id}",status="200"} 1.0'
    ) in text
    assert (
        'tuneforge_http_requests_total{method="GET",route="/v1/fine_tuning/jobs/{job_id}",status="404"} 1.0'
    ) in text
    assert (
        'tuneforge_http_request_duration_seconds_count{method="GET",'
        'route="/v1/fine_tuning/jobs/{job_id}"} 2.0' in text
    )
    assert "tuneforge_queue_depth 1.0" in text and "tuneforge_running_jobs 0.0" in text
    assert 'tuneforge_jobs{status="succeeded"} 1.0' in text
    assert "tuneforge_trained_tokens_total 1234.0" in text
    assert 'tuneforge_served_tokens_total{type="prompt"} 11.0' in text
    assert 'tuneforge_served_tokens_total{type="completion"} 5.0' in text
