// Job page: polls /ui/api/jobs/{id}/live and keeps status, charts, checkpoints and events current.
"use strict";

(function () {
  const { job_id: jobId, has_validation: hasValidation } = TF.pageData();
  const $ = (id) => document.getElementById(id);
  let after = 0;
  const points = new Map();  // step -> metrics (a re-run step replaces the old point)
  const events = [];

  const color = { train: "#4f46e5", valid: "#f79009", full: "#12b76a" };
  function chart(canvas, label) {
    const datasets = [
      { label: `training ${label}`, data: [], borderColor: color.train, backgroundColor: color.train, pointRadius: 0, borderWidth: 2, tension: 0.2 },
      { label: `validation ${label}`, data: [], borderColor: color.valid, backgroundColor: color.valid, showLine: false, pointRadius: 4, order: 1 },
      // drawn behind the validation point of the same step (they are often close): a larger ring
      { label: `full validation ${label}`, data: [], borderColor: color.full, backgroundColor: "rgba(18,183,106,0.15)", showLine: false, pointRadius: 8, borderWidth: 2, order: 2 },
    ];
    return new Chart(canvas, {
      type: "line",
      // no validation file, no validation series: a legend entry without points only confuses
      data: { datasets: hasValidation ? datasets : datasets.slice(0, 1) },
      options: {
        animation: false, maintainAspectRatio: false, parsing: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } },
                  y: { title: { display: true, text: label } } },
        plugins: { legend: { position: "bottom" }, tooltip: { mode: "nearest", intersect: false } },
      },
    });
  }
  const loss = chart($("loss-chart"), "loss");
  const acc = chart($("acc-chart"), "accuracy");

  function redrawCharts() {
    const sorted = [...points.values()].sort((a, b) => a.step - b.step);
    const series = (key) => sorted.filter((p) => p[key] !== undefined).map((p) => ({ x: p.step, y: p[key] }));
    // DPO jobs report reward accuracy (share of pairs whose preferred side wins) instead
    const a = sorted.some((p) => p.train_rewards_accuracy !== undefined) ? "rewards_accuracy" : "mean_token_accuracy";
    $("acc-title").textContent = a === "rewards_accuracy" ? "Reward accuracy (DPO)" : "Token accuracy";
    // without a validation file the charts hold only the training series (see chart())
    const keys = [["train_loss", "valid_loss", "full_valid_loss"], [`train_${a}`, `valid_${a}`, `full_valid_${a}`]];
    [loss, acc].forEach((c, i) => c.data.datasets.forEach((d, n) => { d.data = series(keys[i][n]); }));
    loss.update(); acc.update();
    $("loss-empty").hidden = sorted.length > 0;
    document.body.dataset.points = String(sorted.length);
  }

  function renderJob(live) {
    const job = live.job;
    const status = $("job-status");
    status.textContent = job.status.replace("_", " ");
    status.className = `badge ${job.status}`;
    document.body.dataset.status = job.status;
    $("job-note").textContent = live.requested_action === "pause" ? "pause requested…"
      : live.requested_action === "cancel" ? "cancel requested…"
      : job.status === "running" && job.estimated_finish ? `estimated finish ${TF.ts(job.estimated_finish)}` : "";
    $("ft-model").textContent = job.fine_tuned_model || "—";
    $("duration").textContent = TF.dur(live.duration);
    $("trained-tokens").textContent = TF.num(job.trained_tokens);
    for (const td of document.querySelectorAll("[data-hp]")) {
      // method-only values (DPO's beta) are resolved in the method, not the shared hyperparameters
      const inMethod = ((job.method || {})[(job.method || {}).type] || {}).hyperparameters || {};
      td.textContent = job.hyperparameters[td.dataset.hp] ?? inMethod[td.dataset.hp];
    }
    $("result-files").replaceChildren(...(job.result_files.length ? job.result_files.map((id) =>
      TF.el("a", { class: "btn", href: `/ui/files/${id}/download`, "data-result": id }, "Download step_metrics.csv")) : ["—"]));
    const terminal = live.terminal;
    $("btn-cancel").hidden = terminal || live.requested_action === "cancel";
    $("btn-pause").hidden = job.status !== "running" || live.requested_action !== null;
    $("btn-resume").hidden = !(job.status === "paused" || live.requested_action === "pause");
    const pg = $("btn-playground");
    if (job.fine_tuned_model) {
      pg.hidden = false;
      pg.href = `/ui/playground?models=${encodeURIComponent(job.model)},${encodeURIComponent(job.fine_tuned_model)}`;
    }
    const err = $("job-error");
    if (job.error) TF.showError(err, `${job.error.code}: ${job.error.message}`); else err.replaceChildren();

    $("timeline").replaceChildren(...live.timeline.map((t) => TF.el("li", { class: t.status },
      TF.el("div", { text: t.status.replace("_", " ") }), TF.el("div", { class: "when", text: TF.ts(t.at) }))));

    const tbody = $("checkpoints").querySelector("tbody");
    tbody.replaceChildren(...live.checkpoints.map((c) => TF.el("tr", {},
      TF.el("td", { text: c.step_number }),
      TF.el("td", { class: "mono", text: c.fine_tuned_model_checkpoint }),
      TF.el("td", { class: "num", text: TF.fix(c.metrics.train_loss) }),
      TF.el("td", { class: "num", text: TF.fix(c.metrics.train_mean_token_accuracy ?? c.metrics.train_rewards_accuracy, 3) }),
      TF.el("td", { class: "num", text: TF.fix(c.metrics.valid_loss) }),
      TF.el("td", { class: "num", text: TF.fix(c.metrics.full_valid_loss) }),
      TF.el("td", {}, TF.el("a", { class: "btn", href: `/ui/playground?models=${encodeURIComponent(job.model)},${encodeURIComponent(c.fine_tuned_model_checkpoint)}` }, "Open in playground")))));
    $("ckpt-empty").hidden = live.checkpoints.length > 0;
  }

  // "Epoch N samples" events: the model's greedy answers to a few held prompts, latest epoch shown.
  function renderSamples(newEvents) {
    const latest = newEvents.filter((e) => e.data && Array.isArray(e.data.samples)).pop();
    if (!latest) return;
    $("samples-epoch").textContent = latest.data.epoch ? `after epoch ${latest.data.epoch}` : "";
    $("samples").querySelector("tbody").replaceChildren(...latest.data.samples.map((s) =>
      TF.el("tr", { "data-sample": "" },
        TF.el("td", { text: s.prompt }),
        TF.el("td", { class: "mono", text: s.expected }),
        TF.el("td", { class: "mono", text: s.answer, "data-match": s.answer.trim() === String(s.expected).trim() ? "1" : "0" }))));
    $("samples-card").hidden = false;
  }

  // The API lists one `metrics` event per step (as OpenAI's); here the messages are the event list
  // and the steps go to a compact, collapsed metrics log (the charts show them anyway).
  const metricRows = [];
  function renderMetrics(newEvents) {
    const fresh = newEvents.filter((e) => e.type === "metrics" && e.data && Number.isInteger(e.data.step));
    if (!fresh.length) return;
    metricRows.push(...fresh);
    const rows = fresh.map((e) => TF.el("tr", {},
      TF.el("td", { class: "num", text: e.data.step }),
      TF.el("td", { class: "num", text: TF.fix(e.data.train_loss) }),
      TF.el("td", { class: "num", text: TF.fix(e.data.train_mean_token_accuracy, 3) }),
      TF.el("td", { class: "num", text: TF.fix(e.data.valid_loss) }),
      TF.el("td", { class: "num", text: TF.fix(e.data.valid_mean_token_accuracy, 3) })));
    $("metrics").querySelector("tbody").prepend(...rows.reverse());  // newest first
    $("metrics-count").textContent = `(${metricRows.length} steps)`;
  }

  function renderEvents(allNew) {
    renderMetrics(allNew);
    renderSamples(allNew);
    const newEvents = allNew.filter((e) => e.type !== "metrics");
    events.push(...newEvents);
    const tbody = $("events").querySelector("tbody");
    const rows = newEvents.map((e) => TF.el("tr", { class: `lvl-${e.level}` },
      TF.el("td", { class: "muted", style: "white-space:nowrap", text: TF.ts(e.created_at) }),
      TF.el("td", { text: e.level }),
      TF.el("td", { text: e.message })));
    if (rows.length) tbody.querySelector("td.empty")?.parentElement.remove();
    tbody.prepend(...rows.reverse());  // newest first, like the API
    if (!events.length) tbody.replaceChildren(TF.el("tr", {}, TF.el("td", { class: "empty", text: "No events yet." })));
  }

  let timer = null, inflight = false;
  function schedule(ms) { clearTimeout(timer); timer = setTimeout(poll, ms); }
  async function poll() {
    clearTimeout(timer);
    if (inflight) { schedule(300); return; }
    inflight = true;
    let live;
    try {
      live = await TF.api("GET", `/ui/api/jobs/${jobId}/live?after=${after}`);
    } catch (e) {
      TF.showError($("action-error"), `Could not refresh: ${e.message}`);
      schedule(5000);
      return;
    } finally {
      inflight = false;
    }
    after = live.next;
    for (const p of live.points) points.set(p.step, { ...(points.get(p.step) || {}), ...p });
    renderJob(live);
    if (live.events.length || !events.length) renderEvents(live.events);
    redrawCharts();
    if (live.more) schedule(0);
    else if (!live.terminal) schedule(1000);
    else document.body.dataset.settled = "1";
  }

  for (const id of ["btn-pause", "btn-resume", "btn-cancel"]) {
    $(id).addEventListener("click", async (ev) => {
      const action = ev.currentTarget.dataset.action;
      if (action === "cancel" && !confirm("Cancel this job? Training stops and cannot be resumed.")) return;
      ev.currentTarget.disabled = true;
      try {
        await TF.api("POST", `/ui/api/jobs/${jobId}/${action}`);
        $("action-error").replaceChildren();
      } catch (e) {
        TF.showError($("action-error"), e.message);
      } finally {
        ev.currentTarget.disabled = false;
      }
      poll();
    });
  }
  poll();
})();
