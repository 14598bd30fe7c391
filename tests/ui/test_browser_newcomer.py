"""What a newcomer sees first, measured in a real headless Chromium against a real server: the
new-job form preselects a base model and offers only what the service trains, estimates use the
server's prices, a 150-step job's page stays short, lists fit an 800 px window without wrapping ids
at 1366 px, every page has a favicon. Screenshots go to the folder printed at the start."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.ui.test_browser import FAST, jsonl, shot, sign_in

pytestmark = pytest.mark.slow

PRICES = json.dumps({"default": {"training": 8.0}})


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory({**FAST, "TUNEFORGE_PRICES": PRICES})


@pytest.fixture(scope="module")
def trained(srv, tmp_path_factory):
    """A finished 150-step job without a validation file (10 examples x 15 epochs, batch 1)."""
    key = srv.create_key("newcomer")
    client = srv.client(key)
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text(jsonl(10))
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=f.id,
        suffix="a-rather-long-suffix",
        hyperparameters={"n_epochs": 15, "batch_size": 1},
    )
    import time

    deadline = time.monotonic() + 840  # ~3 min on an idle 2-core machine; much more when shared
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert job.status == "succeeded", job.error
    return {"key": key, "job": job, "file": f.id}


def no_404s(page, srv, paths: list[str]) -> None:
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    for path in paths:
        page.goto(srv.root_url + path)
        page.wait_for_load_state("networkidle")
    assert missing == []


def test_job_page_of_a_150_step_job_stays_short(page, srv, trained, screenshots):
    sign_in(page, srv, trained["key"])
    job = trained["job"]
    page.goto(srv.root_url + f"/ui/jobs/{job.id}")
    page.wait_for_selector("body[data-settled='1']")
    assert int(page.get_attribute("body", "data-points")) == 150
    # no validation file: no validation series in either chart's legend
    labels = page.evaluate("""() => ['loss-chart', 'acc-chart'].map(
        id => Chart.getChart(id).data.datasets.map(d => d.label))""")
    assert labels == [["training loss"], ["training accuracy"]]
    events = page.locator("#events tbody tr").all_inner_texts()
    assert any("Fine-tuning job started" in e for e in events)
    # messages only: per epoch a checkpoint and a samples event (15 epochs), plus the lifecycle
    # events; never one row per step (150)
    assert len(events) <= 45 and not any(re.search(r"\bStep \d+", e) for e in events)
    assert page.locator("#metrics-log").get_attribute("open") is None  # collapsed
    assert page.locator("#metrics tbody tr").count() == 150
    box = page.locator("#events-box").bounding_box()
    height = page.evaluate("document.documentElement.scrollHeight")
    shot(page, screenshots, "20-job-150-steps")
    page.click("#metrics-log summary")
    opened = page.locator("#metrics-log").bounding_box()
    shot(page, screenshots, "21-job-150-steps-metrics-open")
    assert box["height"] <= 330 and opened["height"] <= 400, (box, opened)
    assert height < 2600, height  # was ~7,500 px with one row per step


def test_new_job_form_defaults_and_server_prices(page, srv, trained, screenshots):
    sign_in(page, srv, trained["key"])
    page.goto(srv.root_url + "/ui/jobs/new")
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert trained["job"].fine_tuned_model in options  # an ft: model exists...
    assert page.input_value("#model") == "tuneforge-tiny"  # ...but a base model is preselected
    assert "untrained test model" in page.locator("#model option:checked").inner_text()
    methods = page.eval_on_selector_all("#method option", "os => os.map(o => o.value)")
    assert methods == ["supervised", "dpo"]  # only what the service trains (DPO has landed)
    assert page.locator("#price").count() == 0
    page.select_option("#training_file", trained["file"])
    page.click("#check-data")
    page.wait_for_selector("[data-report-ok='1']", timeout=90_000)
    note = page.inner_text("[data-price-source]")
    assert "$8 per 1M trained tokens" in note and "TUNEFORGE_PRICES" in note
    assert "$0.00" not in page.inner_text("#report")
    shot(page, screenshots, "22-new-job-defaults")
    page.goto(srv.root_url + "/ui/playground")
    labels = page.eval_on_selector_all("#model-0 option", "os => os.map(o => o.textContent)")
    assert "tuneforge-tiny — untrained test model" in labels


def test_lists_fit_and_ids_do_not_wrap(browser, srv, trained, screenshots):
    for width in (800, 1366):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        sign_in(page, srv, trained["key"])
        for path, table in (("/ui/jobs", "#jobs-table"), ("/ui/files", "#files-table")):
            page.goto(srv.root_url + path)
            fit = page.evaluate(f"""() => {{
                const t = document.querySelector('{table}'), card = t.closest('.card');
                const ids = [...t.querySelectorAll('td.id .mono')].map(e => e.getClientRects().length);
                return {{table: t.getBoundingClientRect().width, card: card.clientWidth,
                        page: document.documentElement.scrollWidth, ids}};
            }}""")
            shot(page, screenshots, f"23-{path.strip('/').replace('/', '-')}-{width}px")
            assert fit["table"] <= fit["card"] and fit["page"] <= width, (path, width, fit)
            assert fit["ids"] and set(fit["ids"]) == {1}, (path, width, fit)  # one line each
            if width == 1366 and table == "#jobs-table":
                lines = page.evaluate("""() => [...document.querySelectorAll('td.model-id .mono')]
                    .map(e => e.getClientRects().length)""")
                assert lines and set(lines) == {1}, lines  # the ft: model name on one line too
        context.close()


def test_favicon_everywhere(page, srv, trained):
    assert httpx.get(srv.root_url + "/favicon.ico").status_code == 200
    assert httpx.get(srv.root_url + "/ui/static/favicon.svg").status_code == 200
    sign_in(page, srv, trained["key"])
    no_404s(
        page,
        srv,
        ["/ui/jobs", "/ui/files", "/ui/jobs/new", "/ui/playground", f"/ui/jobs/{trained['job'].id}"],
    )
