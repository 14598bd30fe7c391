"""Take the model anywhere, share it with another project: a real server fine-tunes tuneforge-tiny
on ten Q/A pairs until it memorises them; its merged (f32) and GGUF (f16) exports, downloaded from
the API and loaded with plain transformers, answer the training prompts exactly as the served
model does and stop at the same place; the dashboard's download link serves the same tar; another
project gets 404s. Then, through the openai SDK with an admin key, the model is shared with that
project (which chats with it and fine-tunes on top of it), permissions page, and a revoke is a 404
at once."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import TUNEFORGE
from tests.helpers import FINISHED, answer, upload_pairs, watch
from tests.training.helpers import QA, greedy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(server_factory):
    server = server_factory({"TUNEFORGE_WORKERS": "1", "TUNEFORGE_WORKER_POLL_SECONDS": "0.2"})
    client = server.client()
    job = client.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=upload_pairs(client, QA),
        suffix="qa",
        seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 15, "batch_size": 1}}},
    )
    done = watch(client, job.id, FINISHED, timeout=900)
    assert done.status == "succeeded", done.error
    served = [answer(client, done.fine_tuned_model, q) for q, _ in QA]
    assert sum(s == (a, "stop") for s, (_, a) in zip(served, QA)) >= 9, served
    return server, client, done, served


def download(server, key, model, tmp_path, **params):
    with httpx.stream(
        "GET",
        f"{server.base_url}/models/{model}/export",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=300,
    ) as r:
        if r.status_code != 200:
            r.read()
            return r
        data = b"".join(r.iter_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path, filter="data")
        (top,) = {n.split("/")[0] for n in tar.getnames()}
    return tmp_path / top


def greedy_answers(model, tok) -> list[tuple[str, str]]:
    out = []
    for q, _ in QA:
        new = greedy(model, tok, q)
        eos = model.generation_config.eos_token_id
        stopped = bool(new) and new[-1] in (eos if isinstance(eos, list) else [eos])
        out.append((tok.decode(new, skip_special_tokens=True), "stop" if stopped else "length"))
    return out


def test_merged_and_gguf_answer_like_the_served_model(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    server, client, job, served = trained
    key = client.api_key
    merged = download(server, key, job.fine_tuned_model, tmp_path / "m", format="merged", dtype="f32")
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert greedy_answers(model, AutoTokenizer.from_pretrained(merged)) == served

    gguf_dir = download(server, key, job.fine_tuned_model, tmp_path / "g", format="gguf", dtype="f16")
    assert 'PARAMETER stop "<|im_end|>"' in (gguf_dir / "Modelfile").read_text()
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="model.gguf").eval()
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="model.gguf")
    assert greedy_answers(model, tok) == served


def test_dashboard_link_cli_and_errors(trained, tmp_path):
    server, client, job, _ = trained
    ft = job.fine_tuned_model
    with httpx.Client(base_url=server.root_url, timeout=300) as ui:
        r = ui.post("/ui/login", data={"api_key": client.api_key, "next": "/ui/jobs"})
        assert r.status_code in (200, 303)
        page = ui.get(f"/ui/jobs/{job.id}").text
        assert "/export?format=gguf" in page
        r = ui.get(f"/ui/api/models/{ft}/export", params={"format": "peft"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            assert any(n.endswith("/README.md") for n in tar.getnames())
    # a bad option is OpenAI's 400 envelope, not a 500
    r = download(server, client.api_key, ft, tmp_path, format="merged", quant="q8_0")
    assert r.status_code == 400 and r.json()["error"]["param"] == "quant"
    # the CLI, against the same data dir, no server needed
    out = subprocess.run(
        [
            TUNEFORGE,
            "models",
            "export",
            ft,
            "--format",
            "gguf",
            "--quant",
            "q8_0",
            "-o",
            str(tmp_path / "cli"),
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli" / "model.gguf").is_file() and (tmp_path / "cli" / "Modelfile").is_file()


def test_another_project_cannot_export_or_download(trained, tmp_path):
    server, _, job, _ = trained
    other = server.create_key("export-other")
    r = download(server, other, job.fine_tuned_model, tmp_path, format="peft")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    with httpx.Client(base_url=server.root_url, timeout=60) as ui:
        ui.post("/ui/login", data={"api_key": other, "next": "/ui/jobs"})
        r = ui.get(f"/ui/api/models/{job.fine_tuned_model}/export", params={"format": "peft"})
        assert r.status_code == 404
    out = subprocess.run(
        [
            TUNEFORGE,
            "models",
            "export",
            job.fine_tuned_model,
            "--format",
            "peft",
            "--project",
            "export-other",
            "-o",
            str(tmp_path / "x"),
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert not (tmp_path / "x").exists()


def project_id(server, name: str) -> str:
    out = subprocess.run(
        [TUNEFORGE, "projects", "list"],
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return next(line.split("\t")[1] for line in out.splitlines() if line.split("\t")[0] == name)


def test_share_chat_fine_tune_on_top_revoke(trained):
    server, client, job, served = trained
    ft, q = job.fine_tuned_model, QA[0][0]
    admin = server.client(server.create_key("default", admin=True))
    other = server.client(server.create_key("share-other"))
    with pytest.raises(openai.NotFoundError):
        answer(other, ft, q)
    with pytest.raises(openai.PermissionDeniedError):  # not an admin key
        client.fine_tuning.checkpoints.permissions.create(ft, project_ids=[project_id(server, "share-other")])

    perms = admin.fine_tuning.checkpoints.permissions.create(
        ft, project_ids=[project_id(server, "share-other")]
    )
    (perm,) = perms.data
    assert perm.object == "checkpoint.permission" and perm.id.startswith("cp_")
    assert answer(other, ft, q) == served[0]  # the other project chats with it
    assert ft in {m.id for m in other.models.list()}
    child = other.fine_tuning.jobs.create(model=ft, training_file=upload_pairs(other, QA), suffix="child")
    assert child.model == ft  # and fine-tunes on top of it
    other.fine_tuning.jobs.cancel(child.id)

    deleted = admin.fine_tuning.checkpoints.permissions.delete(perm.id, fine_tuned_model_checkpoint=ft)
    assert (deleted.id, deleted.deleted) == (perm.id, True)
    with pytest.raises(openai.NotFoundError):  # revoked: gone at once
        answer(other, ft, q)
    other_admin = server.client(server.create_key("share-other", admin=True))
    with pytest.raises(openai.NotFoundError):  # not its model: it cannot manage it
        other_admin.fine_tuning.checkpoints.permissions.retrieve(ft)


def test_permission_list_pagination(trained):
    server, _, job, _ = trained
    ft = job.fine_tuned_model
    admin = server.client(server.create_key("default", admin=True))
    for i in range(5):
        server.create_key(f"page-{i}")
    ids = [project_id(server, f"page-{i}") for i in range(5)]
    for pid in ids:  # one call each: created_at order is the sharing order
        admin.fine_tuning.checkpoints.permissions.create(ft, project_ids=[pid])
        time.sleep(1.05)
    page = admin.fine_tuning.checkpoints.permissions.list(ft, limit=2, order="ascending")
    assert [p.project_id for p in page.data] == ids[:2] and page.has_more
    assert [p.project_id for p in page] == ids  # the SDK follows after=last_id
    desc = admin.fine_tuning.checkpoints.permissions.retrieve(ft, limit=10)
    assert [p.project_id for p in desc.data] == ids[::-1] and not desc.has_more
    one = admin.fine_tuning.checkpoints.permissions.retrieve(ft, project_id=ids[3])
    assert [p.project_id for p in one.data] == [ids[3]]
    again = admin.fine_tuning.checkpoints.permissions.create(ft, project_ids=[ids[0]])
    assert again.data[0].id == page.data[0].id  # sharing twice: the same permission
