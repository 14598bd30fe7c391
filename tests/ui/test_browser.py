"""The dashboard in a real headless Chromium against a real `tuneforge serve` (with its worker):
sign in, upload data and read its validation report, create a job on tuneforge-tiny, watch it
succeed with a loss chart, compare two models in the playground, rate, export the ratings as a
file and find it in Files with the right JSONL. Screenshots of every page go to the folder printed
at the start of the run."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow

FAST = {"TUNEFORGE_WORKER_POLL_SECONDS": "0.2", "TUNEFORGE_JOB_LEASE_SECONDS": "4"}


def jsonl(n: int, offset: int = 0) -> str:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are a calculator."},
                    {"role": "user", "content": f"What is {i} + {i}?"},
                    {"role": "assistant", "content": f"It is {2 * i}."},
                ]
            }
        )
        + "\n"
        for i in range(offset, offset + n)
    )


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory(FAST)


def shot(page, folder, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def sign_in(page, srv, key: str) -> None:
    page.goto(srv.root_url + "/")
    assert "/ui/login" in page.url
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/jobs$"))


def test_sign_in_upload_report_files(page, srv, screenshots, tmp_path):
    page.goto(srv.root_url + "/")
    page.wait_for_selector("#api_key")
    page.fill("#api_key", "sk-tf-wrong")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("#login-error")
    assert "`" not in page.inner_text("#login-error")  # plain text, no Markdown
    shot(page, screenshots, "01-sign-in-error")

    key = srv.create_key("browser")
    sign_in(page, srv, key)
    assert "No fine-tuning jobs yet" in page.inner_text("#jobs-empty")
    assert key not in page.content() and key not in page.url
    cookies = page.context.cookies()
    assert [c["httpOnly"] for c in cookies if c["name"] == "tuneforge_session"] == [True]
    assert all(c["value"] != key for c in cookies)
    shot(page, screenshots, "02-jobs-empty")

    # Files: upload a broken file with the progress bar, preview it, see its errors by line
    bad = tmp_path / "broken.jsonl"
    bad.write_text(jsonl(9) + '{"messages": [{"role": "robot", "content": "beep"}]}\n{oops\n')
    page.goto(srv.root_url + "/ui/files")
    assert "No files" in page.inner_text("#files-empty")
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-btn")
    page.wait_for_selector("#files-table")
    row = page.locator("#files-table tbody tr", has_text="broken.jsonl")
    assert row.count() == 1
    shot(page, screenshots, "03-files")
    row.locator("a", has_text="Preview").click()
    page.wait_for_selector("#preview")
    assert "What is 0 + 0?" in page.inner_text("#preview")
    page.click("#validate-btn")
    page.wait_for_selector("[data-report-ok='0']")
    lines = page.locator(".report-errors tbody tr td:first-child").all_inner_texts()
    assert lines == ["10", "11"]
    shot(page, screenshots, "04-file-preview-report-errors")

    # ...and delete it
    page.once("dialog", lambda d: d.accept())
    page.click("button[data-delete]")
    page.wait_for_url(re.compile(r"/ui/files$"))
    assert page.locator("#files-empty").count() == 1

    # another project's user sees none of this
    other = page.context.browser.new_context()
    other_page = other.new_page()
    sign_in(other_page, srv, srv.create_key("someone-else"))
    other_page.goto(srv.root_url + "/ui/files")
    assert other_page.locator("#files-empty").count() == 1
    other.close()


def test_train_watch_playground_rate_export(page, srv, screenshots, tmp_path):
    key = srv.create_key("default")
    sign_in(page, srv, key)

    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text(jsonl(10))
    valid.write_text(jsonl(10, offset=20))
    page.goto(srv.root_url + "/ui/jobs/new")
    page.set_input_files("input[data-upload-for=training_file]", str(train))
    page.wait_for_selector("[data-report-ok='1']", timeout=90_000)  # first use builds the tokenizer
    page.set_input_files("input[data-upload-for=validation_file]", str(valid))
    page.wait_for_function("document.querySelectorAll('[data-report-ok=\"1\"]').length == 2", timeout=60_000)
    report = page.inner_text("#report")
    assert "10 examples" in report and "epochs (auto)" in report
    assert "estimated trained tokens" in report
    page.fill("#n_epochs", "3")
    page.fill("#batch_size", "5")
    page.fill("#suffix", "ui")
    page.fill("#seed", "11")
    page.fill("#metadata", "origin=browser")
    shot(page, screenshots, "05-new-job-report")

    # a client mistake is explained next to its field, and nothing is created
    page.fill("#learning_rate_multiplier", "-1")
    page.click("#create-job")
    page.wait_for_selector("#form-error .alert")
    assert "learning_rate_multiplier" in page.inner_text("#form-error")
    shot(page, screenshots, "06-new-job-error")
    page.fill("#learning_rate_multiplier", "auto")
    page.click("#create-job")
    page.wait_for_url(re.compile(r"/ui/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[-1]

    page.wait_for_selector("body[data-status=succeeded]", timeout=240_000)
    page.wait_for_selector("body[data-settled='1']")
    assert int(page.get_attribute("body", "data-points")) == 6  # 3 epochs x 2 steps
    assert page.locator("#loss-empty").is_hidden()
    drawn = page.evaluate("""() => {
        const c = Chart.getChart('loss-chart');
        return c.data.datasets.map(d => d.data.length);
    }""")
    assert drawn[0] == 6 and drawn[1] >= 1 and drawn[2] >= 1  # training, valid, full-valid points
    assert page.locator("#checkpoints tbody tr").count() == 3
    timeline = page.locator("#timeline li").all_inner_texts()
    assert [t.split("\n")[0] for t in timeline] == ["validating files", "queued", "running", "succeeded"]
    assert page.locator("td[data-hp=n_epochs]").inner_text() == "3"
    assert "Fine-tuning job started" in page.inner_text("#events")
    # what the model answers after the last epoch, beside the expected answers (validation prompts)
    assert page.locator("#samples-card").is_visible()
    assert page.locator("#samples tbody tr[data-sample]").count() == 3
    assert page.inner_text("#samples-epoch") == "after epoch 3"
    assert page.locator("[data-result]").count() == 1
    assert page.locator("#btn-cancel").is_hidden()
    ft_model = page.inner_text("#ft-model")
    assert ft_model.startswith("ft:tuneforge-tiny:") and ":ui:" in ft_model
    shot(page, screenshots, "07-job-succeeded")

    page.goto(srv.root_url + "/ui/jobs")
    assert page.locator(f"tr[data-job={job_id}] .badge").inner_text() == "succeeded"
    shot(page, screenshots, "08-jobs-list")
    page.goto(srv.root_url + f"/ui/jobs/new?rerun={job_id}")
    assert page.input_value("#n_epochs") == "3" and page.input_value("#suffix") == "ui"
    assert page.input_value("#metadata") == "origin=browser"

    # playground: base model vs the fine-tune, side by side
    page.goto(srv.root_url + f"/ui/jobs/{job_id}")
    page.click("#btn-playground")
    page.wait_for_url(re.compile(r"/ui/playground"))
    assert page.input_value("#model-0") == "tuneforge-tiny"
    assert page.input_value("#model-1") == ft_model
    page.fill("#system", "You are a calculator.")
    page.fill("#user", "What is 3 + 3?")
    page.fill("#max_tokens", "16")
    page.click("#run-btn")
    page.wait_for_function(
        "document.querySelectorAll('[data-answer][data-done]').length == 2", timeout=120_000
    )
    outputs = page.eval_on_selector_all("[data-output]", "els => els.map(e => e.textContent)")
    assert outputs[0] != outputs[1] and outputs[1]
    stats = page.locator("[data-stats]").all_inner_texts()
    assert all("tokens" in s and "ms" in s for s in stats), stats
    shot(page, screenshots, "09-playground-answers")
    page.click("[data-prefer='1']")
    page.click("[data-rate-down='0']")
    page.click("#save-rating")
    page.wait_for_function("document.getElementById('save-status').textContent == 'Saved.'")
    assert "1 comparison(s) rated" in page.inner_text("#rated-count")
    page.click("#export-btn")
    page.wait_for_selector("#export-ok")
    file_id = page.get_attribute("[data-export-file]", "data-export-file")
    shot(page, screenshots, "10-playground-exported")

    page.goto(srv.root_url + "/ui/files")
    assert page.locator(f"tr[data-file='{file_id}'] .badge").inner_text() == "fine-tune"
    shot(page, screenshots, "11-files-with-export")
    page.goto(srv.root_url + f"/ui/files/{file_id}")
    shot(page, screenshots, "12-export-preview")

    # the file is real training data, readable through the API with the SDK
    client = srv.client(key)
    lines = [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    assert lines == [
        {
            "input": {
                "messages": [
                    {"role": "system", "content": "You are a calculator."},
                    {"role": "user", "content": "What is 3 + 3?"},
                ]
            },
            "preferred_output": [{"role": "assistant", "content": outputs[1]}],
            "non_preferred_output": [{"role": "assistant", "content": outputs[0]}],
        }
    ]
    assert file_id in [f.id for f in client.files.list(purpose="fine-tune")]

    # sign out: the dashboard is closed again
    page.click("#sign-out")
    page.wait_for_url(re.compile(r"/ui/login"))
    page.goto(srv.root_url + "/ui/jobs")
    assert "/ui/login" in page.url


def test_rate_in_the_playground_train_dpo_on_the_ratings_compare(page, srv, screenshots):
    """Close the loop in one click: ratings -> "Train DPO on these ratings" -> a DPO job on the
    rated model, its progress on the playground -> the new model beside the old one."""
    key = srv.create_key("dpo-loop")
    client = srv.client(key)
    sign_in(page, srv, key)
    page.goto(srv.root_url + "/ui/playground?models=tuneforge-tiny,tuneforge-tiny")
    assert page.input_value("#train-model") == "tuneforge-tiny"
    # one comparison rated by hand ...
    page.fill("#user", "What is 1 + 1?")
    page.fill("#max_tokens", "8")
    page.click("#run-btn")
    page.wait_for_function(  # the first answer of the module's server loads the serving engine
        "document.querySelectorAll('[data-answer][data-done]').length == 2", timeout=240_000
    )
    page.click("[data-rate-up='0']")
    page.click("[data-rate-down='1']")
    page.click("#save-rating")
    page.wait_for_function("document.getElementById('save-status').textContent == 'Saved.'")

    # too few pairs: the server's 400 is on the page, and nothing was created
    page.click("#train-btn")
    page.wait_for_selector("#train-status .alert.error")
    assert re.search(
        r"DPO needs at least 10 preference pairs; your ratings make [01]\.", page.inner_text("#train-status")
    )
    assert page.is_enabled("#train-btn")
    assert client.fine_tuning.jobs.list().data == [] and client.files.list().data == []
    shot(page, screenshots, "13-playground-train-dpo-too-few")

    # ... and eleven more through the same endpoint the page uses
    for i in range(2, 13):
        page.evaluate(
            """(i) => TF.api("POST", "/ui/api/playground/ratings", {
            messages: [{role: "user", content: `What is ${i} + ${i}?`}],
            answers: [{model: "tuneforge-tiny", output: `It is ${2 * i}. Cheers.`, rating: 1},
                      {model: "tuneforge-tiny", output: `It is ${2 * i}.`, rating: -1}]})""",
            i,
        )
    # a bad setting is the jobs API's 400, naming the field; nothing is created
    page.fill("#train-beta", "3")
    page.click("#train-btn")
    page.wait_for_selector("#train-status .alert.error")
    assert "method.dpo.hyperparameters.beta" in page.inner_text("#train-status")
    assert client.fine_tuning.jobs.list().data == [] and client.files.list().data == []
    page.fill("#train-beta", "0.2")
    page.fill("#train-n_epochs", "2")
    page.fill("#train-batch_size", "4")
    page.click("#train-btn")
    page.wait_for_selector("#train-job")
    assert page.is_disabled("#train-btn")  # one job at a time from here
    job_id = page.get_attribute("#train-job", "data-job")
    assert f"train_job={job_id}" in page.url  # a reload keeps following it
    page.wait_for_selector("#train-job[data-status=running]", timeout=120_000)
    shot(page, screenshots, "14-playground-dpo-training")
    page.wait_for_selector("#train-done", timeout=240_000)
    progress = page.inner_text("#train-progress")
    m = re.match(r"succeeded · step (\d+) of (\d+) · loss [\d.]+ · reward accuracy ([\d.]+)$", progress)
    assert m and m[1] == m[2], progress
    new_model = page.inner_text("#train-new-model")
    shot(page, screenshots, "15-playground-dpo-done")

    # what the click made, as the API shows it: a preference file and a DPO job on the rated model
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded" and job.model == "tuneforge-tiny"
    hp = job.method.dpo.hyperparameters
    assert job.method.type == "dpo" and (hp.beta, hp.n_epochs, hp.batch_size) == (0.2, 2, 4)
    assert m[2] == "6"  # 11 or 12 pairs, batch 4: 3 steps an epoch
    assert job.fine_tuned_model == new_model and ":playground-dpo:" in new_model
    lines = client.files.content(job.training_file).text.splitlines()
    assert len(lines) in (11, 12)  # 11, plus the hand-rated one unless both answers came out the same
    assert all(set(json.loads(x)) == {"input", "preferred_output", "non_preferred_output"} for x in lines)
    # the training moved the preference: the last step's pairs mostly prefer the preferred side
    assert float(m[3]) > 0.5

    # compare right there: old and new pre-selected, the same conversation run on both
    assert page.input_value("#model-0") == "tuneforge-tiny" and page.input_value("#model-1") == new_model
    assert page.input_value("#model-2") == "" and page.input_value("#train-model") == new_model
    page.click("#compare-new")
    page.wait_for_function(
        "document.querySelectorAll('[data-answer][data-done]').length == 2", timeout=120_000
    )
    assert page.locator("[data-answer] h3").all_inner_texts() == ["tuneforge-tiny", new_model]
    assert all("tokens" in t for t in page.locator("[data-stats]").all_inner_texts())
    shot(page, screenshots, "16-playground-compare-dpo")

    # a reload of the page still shows the job's outcome and the same pair of models
    page.reload()
    page.wait_for_selector("#train-done", timeout=60_000)
    assert page.input_value("#model-1") == new_model

    # "more options…": the same ratings, exported, in the create form prefilled for DPO
    page.click("#train-options")
    page.wait_for_url(re.compile(r"/ui/jobs/new\?"))
    assert page.input_value("#method") == "dpo" and page.input_value("#model") == new_model
    assert page.locator("#beta-field").is_visible()
    page.click("#check-data")
    page.wait_for_selector("[data-report-ok='1']", timeout=90_000)  # checked as preference pairs
    assert re.search(r"Training file: 1[12] examples, format preference", page.inner_text("#report"))
    page.fill("#beta", "3")
    page.click("#create-job")
    page.wait_for_selector("#form-error .alert")
    assert "method.dpo.hyperparameters.beta" in page.inner_text("#form-error")
    assert len(client.fine_tuning.jobs.list().data) == 1
