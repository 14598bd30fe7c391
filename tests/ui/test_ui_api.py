"""The dashboard's pages and JSON endpoints through the real app (TestClient), on SQLite and
PostgreSQL: sign-in and its cookie, auth on every page and endpoint, project isolation (another
project's job or file is a 404 in the UI too), job creation through the jobs service, the live
job feed, ratings and their DPO export as a File."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from tuneforge.services.keys import create_key, hash_secret, revoke_key
from tuneforge.store.db import transaction
from tuneforge.store.tables import ApiKey, UiSession
from tuneforge.training.stats import auto_n_epochs


def jsonl(n: int, offset: int = 0) -> bytes:
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"What is {i} + {i}?"},
                    {"role": "assistant", "content": f"It is {2 * i}."},
                ]
            }
        )
        for i in range(offset, offset + n)
    ]
    return ("\n".join(rows) + "\n").encode()


def new_secret(app_client, project: str = "default") -> str:
    with transaction(app_client.app.state.sessionmaker) as session:
        _, secret = create_key(session, project)
    return secret


def sign_in(app_client, secret: str) -> None:
    r = app_client.post("/ui/login", data={"api_key": secret, "next": "/ui/jobs"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def upload(app_client, data: bytes, name: str = "train.jsonl") -> str:
    r = app_client.post("/ui/api/files", files={"file": (name, data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_root_redirects_and_pages_need_sign_in(app_client):
    r = app_client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/ui"
    for path in ("/ui/jobs", "/ui/files", "/ui/playground", "/ui/jobs/new", "/ui/jobs/ftjob-x"):
        r = app_client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/ui/login?next=")
    for method, path in (
        ("GET", "/ui/api/jobs/ftjob-x/live"),
        ("POST", "/ui/api/jobs"),
        ("POST", "/ui/api/playground/export"),
        ("POST", "/ui/api/playground/train"),
        ("DELETE", "/ui/api/files/f"),
        ("POST", "/ui/api/playground/ratings"),
        ("POST", "/ui/api/playground/chat"),
        ("GET", "/ui/api/files/f/report"),
    ):
        r = app_client.request(method, path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "not_signed_in"
    assert "Sign in" in app_client.get("/ui/login").text


def test_sign_in_cookie_is_opaque_httponly_lax_and_sign_out_ends_it(app_client):
    bad = app_client.post("/ui/login", data={"api_key": "sk-tf-nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text

    secret = new_secret(app_client)
    r = app_client.post(
        "/ui/login", data={"api_key": secret, "next": "//evil.example/x"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here; https gets Secure
    token = app_client.cookies.get("tuneforge_session")
    assert token and secret not in cookie and secret not in r.headers["location"]
    with app_client.app.state.sessionmaker() as s:
        row = s.scalar(select(UiSession))
        assert row.id != token and secret not in row.id  # only a hash of the token is stored

    page = app_client.get("/ui/jobs")
    assert page.status_code == 200 and "No fine-tuning jobs yet" in page.text
    assert "project <b>default</b>" in page.text

    app_client.post("/ui/logout", follow_redirects=False)
    app_client.cookies.set("tuneforge_session", token, path="/ui")  # replaying the old cookie
    assert app_client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_the_session(app_client):
    secret = new_secret(app_client)
    sign_in(app_client, secret)
    assert app_client.get("/ui/api/jobs/ftjob-x/live").status_code == 404
    with transaction(app_client.app.state.sessionmaker) as s:
        key = s.scalar(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret)))
        revoke_key(s, key.id)
    assert app_client.get("/ui/api/jobs/ftjob-x/live").status_code == 401


def test_cross_origin_posts_are_refused(app_client):
    sign_in(app_client, new_secret(app_client))
    r = app_client.post("/ui/api/playground/export", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_origin"


def test_create_job_same_rules_and_errors_as_the_api(app_client, auth_headers):
    sign_in(app_client, new_secret(app_client))
    train = upload(app_client, jsonl(10))
    bad = {
        "model": "tuneforge-tiny",
        "training_file": train,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 99}}},
    }
    ui = app_client.post("/ui/api/jobs", json=bad)
    api = app_client.post("/v1/fine_tuning/jobs", json=bad, headers=auth_headers)
    assert ui.status_code == api.status_code == 400
    assert ui.json() == api.json()
    assert ui.json()["error"]["param"] == "method.supervised.hyperparameters.n_epochs"
    assert app_client.post("/ui/api/jobs", json={**bad, "model": "nope"}).json()["error"]["param"] == "model"

    good = {
        **bad,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        "suffix": "ui",
        "seed": 7,
        "metadata": {"team": "a"},
        "integrations": [{"type": "wandb", "wandb": {"project": "p", "tags": ["x"]}}],
    }
    r = app_client.post("/ui/api/jobs", json=good)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "validating_files" and job["seed"] == 7
    # ...and it is the same job the API sees
    assert app_client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth_headers).json()["id"] == job["id"]

    live = app_client.get(f"/ui/api/jobs/{job['id']}/live").json()
    assert live["job"]["id"] == job["id"] and not live["terminal"]
    assert [e["message"] for e in live["events"]][:1] == [f"Created fine-tuning job: {job['id']}"]
    assert live["timeline"][0]["status"] == "validating_files"
    again = app_client.get(f"/ui/api/jobs/{job['id']}/live?after={live['next']}").json()
    assert again["events"] == [] and again["next"] == live["next"]

    # the pages show it; the list filters by status; re-run prefills the form
    assert job["id"] in app_client.get("/ui/jobs").text
    assert job["id"] in app_client.get("/ui/jobs?status=validating_files").text
    assert job["id"] not in app_client.get("/ui/jobs?status=succeeded").text
    page = app_client.get(f"/ui/jobs/{job['id']}")
    assert page.status_code == 200 and "Re-run with this configuration" in page.text
    form = app_client.get(f"/ui/jobs/new?rerun={job['id']}").text
    prefill = json.loads(form.split('id="page-data">')[1].split("</script>")[0])["prefill"]
    assert prefill["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    assert (prefill["suffix"], prefill["seed"], prefill["metadata"]) == ("ui", 7, {"team": "a"})
    assert prefill["integrations"][0]["wandb"]["project"] == "p"

    # cancel through the UI uses the service's state machine
    r = app_client.post(f"/ui/api/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = app_client.post(f"/ui/api/jobs/{job['id']}/cancel")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_job_status"
    assert app_client.post(f"/ui/api/jobs/{job['id']}/explode").status_code == 400


def test_another_projects_job_and_files_are_404_in_the_ui(app_client, make_key):
    other = make_key("other")
    fid = app_client.post(
        "/v1/files", headers=other, files={"file": ("t.jsonl", jsonl(10))}, data={"purpose": "fine-tune"}
    ).json()["id"]
    job = app_client.post(
        "/v1/fine_tuning/jobs", headers=other, json={"model": "tuneforge-tiny", "training_file": fid}
    ).json()["id"]

    sign_in(app_client, new_secret(app_client, "mine"))
    page = app_client.get(f"/ui/jobs/{job}")
    assert page.status_code == 404 and f"No such fine-tuning job: {job}" in page.text
    assert app_client.get(f"/ui/api/jobs/{job}/live").status_code == 404
    assert app_client.post(f"/ui/api/jobs/{job}/cancel").status_code == 404
    assert app_client.get(f"/ui/jobs/new?rerun={job}").status_code == 404
    assert job not in app_client.get("/ui/jobs").text
    assert app_client.get(f"/ui/files/{fid}").status_code == 404
    assert app_client.get(f"/ui/files/{fid}/download").status_code == 404
    assert app_client.get(f"/ui/api/files/{fid}/report").status_code == 404
    assert app_client.delete(f"/ui/api/files/{fid}").status_code == 404
    assert fid not in app_client.get("/ui/files").text
    r = app_client.post("/ui/api/jobs", json={"model": "tuneforge-tiny", "training_file": fid})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    # the other project still has both
    assert app_client.get(f"/v1/fine_tuning/jobs/{job}", headers=other).status_code == 200
    assert app_client.get(f"/v1/files/{fid}", headers=other).status_code == 200


def test_files_upload_preview_download_delete(app_client, auth_headers):
    sign_in(app_client, new_secret(app_client))
    r = app_client.post("/ui/api/files", files={"file": ("notes.txt", b"x")}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "Must be .jsonl" in r.json()["error"]["message"]
    fid = upload(app_client, jsonl(12))
    listing = app_client.get("/ui/files").text
    assert fid in listing and "train.jsonl" in listing
    page = app_client.get(f"/ui/files/{fid}").text
    assert "What is 0 + 0?" in page and "It is 8." in page and "What is 5 + 5?" not in page
    assert app_client.get(f"/ui/files/{fid}/download").content == jsonl(12)
    assert app_client.get(f"/v1/files/{fid}", headers=auth_headers).json()["bytes"] == len(jsonl(12))
    assert app_client.delete(f"/ui/api/files/{fid}").json() == {"id": fid, "object": "file", "deleted": True}
    assert app_client.get(f"/v1/files/{fid}", headers=auth_headers).status_code == 404


def test_ratings_export_a_dpo_file(app_client, auth_headers):
    sign_in(app_client, new_secret(app_client))
    r = app_client.post("/ui/api/playground/export")
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_ratings"

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    answers = [
        {"model": "a", "output": "4", "preferred": True},
        {"model": "b", "output": "four-ish"},
        {"model": "c", "output": "4"},
    ]
    r = app_client.post("/ui/api/playground/ratings", json={"messages": messages, "answers": answers})
    assert r.status_code == 200 and r.json()["rated"] == 1
    cid = r.json()["comparison_id"]
    # re-rating the same comparison replaces it
    app_client.post(
        "/ui/api/playground/ratings", json={"comparison_id": cid, "messages": messages, "answers": answers}
    )
    thumbs = [{"model": "a", "output": "yes", "rating": 1}, {"model": "b", "output": "no", "rating": -1}]
    app_client.post(
        "/ui/api/playground/ratings",
        json={"messages": [{"role": "user", "content": "ok?"}], "answers": thumbs},
    )
    unrated = app_client.post(
        "/ui/api/playground/ratings",
        json={
            "messages": messages,
            "answers": [{"model": "a", "output": "x"}, {"model": "b", "output": "y"}],
        },
    )
    assert unrated.status_code == 400 and unrated.json()["error"]["param"] == "answers"
    two_best = [{**a, "preferred": True} for a in answers[:2]]
    assert (
        app_client.post(
            "/ui/api/playground/ratings", json={"messages": messages, "answers": two_best}
        ).status_code
        == 400
    )

    r = app_client.post("/ui/api/playground/export")
    assert r.status_code == 200, r.text
    assert r.json()["pairs"] == 2  # "4" over "four-ish" (the identical "4" makes no pair), yes>no
    f = r.json()["file"]
    assert f["purpose"] == "fine-tune" and f["filename"].endswith(".jsonl")
    ids = [
        x["id"] for x in app_client.get("/v1/files?purpose=fine-tune", headers=auth_headers).json()["data"]
    ]
    assert f["id"] in ids
    content = app_client.get(f"/v1/files/{f['id']}/content", headers=auth_headers).text
    lines = [json.loads(line) for line in content.splitlines()]
    assert lines == [
        {
            "input": {"messages": messages},
            "preferred_output": [{"role": "assistant", "content": "4"}],
            "non_preferred_output": [{"role": "assistant", "content": "four-ish"}],
        },
        {
            "input": {"messages": [{"role": "user", "content": "ok?"}]},
            "preferred_output": [{"role": "assistant", "content": "yes"}],
            "non_preferred_output": [{"role": "assistant", "content": "no"}],
        },
    ]


def test_train_dpo_on_the_ratings_in_one_call(app_client, auth_headers, settings):
    """The playground's one click: the ratings become a preference File and a DPO job on the
    chosen model; too few pairs or an unknown model is a 400 that writes nothing."""
    sign_in(app_client, new_secret(app_client))

    def rate(i: int) -> None:
        answers = [
            {"model": "tuneforge-tiny", "output": f"It is {2 * i}. Cheers.", "rating": 1},
            {"model": "tuneforge-tiny", "output": f"It is {2 * i}.", "rating": -1},
        ]
        messages = [{"role": "user", "content": f"What is {i} + {i}?"}]
        r = app_client.post("/ui/api/playground/ratings", json={"messages": messages, "answers": answers})
        assert r.status_code == 200, r.text

    def files_and_jobs() -> tuple[list, list, list]:
        files = app_client.get("/v1/files", headers=auth_headers).json()["data"]
        jobs = app_client.get("/v1/fine_tuning/jobs", headers=auth_headers).json()["data"]
        return files, jobs, sorted(p.name for p in settings.blobs_dir.rglob("*") if p.is_file())

    for i in range(9):
        rate(i)
    before = files_and_jobs()
    r = app_client.post("/ui/api/playground/train", json={"model": "tuneforge-tiny"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_n_examples" and err["param"] == "ratings"
    assert "at least 10 preference pairs; your ratings make 9" in err["message"]
    rate(9)
    r = app_client.post("/ui/api/playground/train", json={"model": "no-such-model"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_available"
    r = app_client.post(
        "/ui/api/playground/train", json={"model": "tuneforge-tiny", "hyperparameters": {"beta": 3}}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "method.dpo.hyperparameters.beta"
    assert files_and_jobs() == before  # no refusal left a file, a blob or a job

    r = app_client.post(
        "/ui/api/playground/train", json={"model": "tuneforge-tiny", "hyperparameters": {"n_epochs": 2}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    job, f = body["job"], body["file"]
    assert body["pairs"] == 10 and f["purpose"] == "fine-tune"
    assert job["status"] == "validating_files" and job["model"] == "tuneforge-tiny"
    assert job["training_file"] == f["id"] and job["metadata"] == {"source": "playground"}
    assert job["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "batch_size": "auto",
                "beta": "auto",
                "learning_rate_multiplier": "auto",
                "n_epochs": 2,
            }
        },
    }
    assert app_client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth_headers).json()["id"] == job["id"]
    content = app_client.get(f"/v1/files/{f['id']}/content", headers=auth_headers).text
    assert len(content.splitlines()) == 10 and '"preferred_output"' in content


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tuneforge.training.tiny import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


def test_validation_report_with_the_models_tokenizer(app_client, settings, tiny_model_dir):
    # Reuse one built tiny model instead of building it per test (the catalog finds it here).
    shutil.copytree(tiny_model_dir, settings.models_dir / tiny_model_dir.name)
    sign_in(app_client, new_secret(app_client))
    good = upload(app_client, jsonl(12))
    from tuneforge.config import ModelPrice

    settings.prices["tuneforge-tiny"] = ModelPrice(training=2)  # the server's price table
    r = app_client.get(f"/ui/api/files/{good}/report?model=tuneforge-tiny")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["ok"] and rep["n_examples"] == 12 and rep["n_epochs_auto"]
    assert rep["n_epochs"] == auto_n_epochs(12) == 8  # OpenAI's auto rule: 100 // 12
    assert rep["total_tokens_per_example"]["mean"] > 0
    assert rep["estimated_trained_tokens"] == rep["billing_tokens"] * 8
    assert rep["estimated_cost"] == pytest.approx(rep["estimated_trained_tokens"] * 2 / 1e6)
    assert rep["price_per_million_tokens"] == 2 and "TUNEFORGE_PRICES" in rep["price_source"]
    fixed = app_client.get(f"/ui/api/files/{good}/report?n_epochs=3").json()
    assert fixed["n_epochs"] == 3 and not fixed["n_epochs_auto"]

    broken = jsonl(9) + b'{"messages": [{"role": "robot", "content": "hi"}]}\nnot json\n'
    bad = upload(app_client, broken, "bad.jsonl")
    rep = app_client.get(f"/ui/api/files/{bad}/report").json()
    assert not rep["ok"]
    assert [e["line"] for e in rep["errors"]] == [10, 11]
    assert "role" in rep["errors"][0]["message"]
    r = app_client.get(f"/ui/api/files/{good}/report?model=gpt-9")
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert app_client.get(f"/ui/api/files/{good}/report?n_epochs=lots").status_code == 400
