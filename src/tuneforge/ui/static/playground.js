// Playground: stream one conversation to 2-4 models side by side, rate, save, export as DPO data.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const { chosen } = TF.pageData();
  const slots = [...document.querySelectorAll("[data-model-slot]")];
  chosen.forEach((m, i) => {
    const sel = slots[i];
    if (!sel) return;
    if (![...sel.options].some((o) => o.value === m)) sel.append(TF.el("option", { value: m }, m));
    sel.value = m;
  });

  let current = null;  // {comparison_id, messages, params, answers: [{model, output, rating, preferred, ...}]}

  function params() {
    const p = { temperature: Number($("temperature").value || 0), top_p: Number($("top_p").value || 1),
                max_tokens: Number($("max_tokens").value || 64) };
    if ($("seed").value !== "") p.seed = Number($("seed").value);
    return p;
  }

  function answerCard(a, i) {
    const out = TF.el("div", { class: "out", "data-output": i });
    const stats = TF.el("div", { class: "stats", "data-stats": i, text: "waiting…" });
    const up = TF.el("button", { title: "Good answer", "data-rate-up": i }, "✓ Good");
    const down = TF.el("button", { title: "Bad answer", "data-rate-down": i }, "✗ Bad");
    const best = TF.el("button", { "data-prefer": i }, "★ Best");
    const card = TF.el("div", { class: "card answer", "data-answer": i },
      TF.el("h3", { class: "mono", text: a.model }), out, stats,
      TF.el("div", { class: "actions rate", style: "margin-top:8px" }, up, down, best));
    up.addEventListener("click", () => { a.rating = a.rating === 1 ? null : 1; paint(); });
    down.addEventListener("click", () => { a.rating = a.rating === -1 ? null : -1; paint(); });
    best.addEventListener("click", () => {
      const was = a.preferred;
      current.answers.forEach((x) => { x.preferred = false; });
      a.preferred = !was; paint();
    });
    a.node = { card, out, stats, up, down, best };
    return card;
  }

  function paint() {
    for (const a of current.answers) {
      a.node.up.classList.toggle("on", a.rating === 1);
      a.node.down.classList.toggle("on", a.rating === -1);
      a.node.best.classList.toggle("on", a.preferred);
      a.node.card.classList.toggle("preferred", a.preferred);
    }
    $("save-status").textContent = "";
  }

  async function stream(a, messages, p) {
    const started = performance.now();
    let first = null;
    const finish = () => {
      a.latency_ms = Math.round(performance.now() - started);
      const ttft = Math.round(first ?? a.latency_ms);
      a.node.stats.textContent = `${a.completion_tokens ?? "?"} tokens · ${a.latency_ms} ms · first token ${ttft} ms · ${a.finish_reason || "stop"}`;
      a.node.card.dataset.done = "1";
    };
    try {
      const res = await fetch("/ui/api/playground/chat", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
        body: JSON.stringify({ model: a.model, messages, ...p }),
      });
      if (!res.ok) {
        let msg = `Request failed (${res.status})`;
        try { msg = (await res.json()).error.message; } catch (e) { /* keep */ }
        throw new Error(msg);
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const line = buf.slice(0, cut).trim();
          buf = buf.slice(cut + 2);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") { finish(); continue; }
          // OpenAI chat.completion.chunk objects, exactly as /v1/chat/completions streams them
          const ev = JSON.parse(data);
          if (ev.error) throw new Error(ev.error.message || "The model failed to answer.");
          if (ev.usage) a.completion_tokens = ev.usage.completion_tokens;
          for (const c of ev.choices || []) {
            if (c.delta && c.delta.content) {
              if (first === null) first = performance.now() - started;
              a.output += c.delta.content;
              a.node.out.textContent = a.output;
              a.node.stats.textContent = "streaming…";
            }
            if (c.finish_reason) a.finish_reason = c.finish_reason;
          }
        }
      }
      if (!a.node.card.dataset.done) finish();
    } catch (e) {
      a.failed = true;
      a.node.card.dataset.done = "1";
      a.node.stats.replaceChildren(TF.el("span", { class: "field-error", text: e.message }));
    }
  }

  $("run-btn").addEventListener("click", async () => {
    $("run-error").replaceChildren();
    const models = slots.map((s) => s.value).filter(Boolean);
    if (models.length < 2) { TF.showError($("run-error"), "Choose at least two models to compare."); return; }
    if (!$("user").value.trim()) { TF.showError($("run-error"), "Write a user message."); return; }
    const messages = [];
    if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value.trim() });
    messages.push({ role: "user", content: $("user").value.trim() });
    const p = params();
    current = { messages, params: p, answers: models.map((model) => ({ model, output: "", rating: null, preferred: false })) };
    $("answers").replaceChildren(...current.answers.map(answerCard));
    $("rate-bar").hidden = false;
    paint();
    $("run-btn").disabled = true;
    await Promise.all(current.answers.map((a) => stream(a, messages, p)));
    $("run-btn").disabled = false;
  });

  $("save-rating").addEventListener("click", async () => {
    if (!current) return;
    const body = {
      messages: current.messages, params: current.params,
      answers: current.answers.filter((a) => !a.failed).map((a) => ({
        model: a.model, output: a.output, rating: a.rating, preferred: a.preferred,
        completion_tokens: a.completion_tokens ?? null, latency_ms: a.latency_ms ?? null })),
    };
    if (current.comparison_id) body.comparison_id = current.comparison_id;
    try {
      const r = await TF.api("POST", "/ui/api/playground/ratings", body);
      current.comparison_id = r.comparison_id;
      $("save-status").textContent = "Saved.";
      $("rated-count").textContent = `${r.rated} comparison(s) rated`;
    } catch (e) {
      $("save-status").replaceChildren(TF.el("span", { class: "field-error", text: e.message }));
    }
  });

  $("export-btn").addEventListener("click", async () => {
    const box = $("export-status");
    try {
      const r = await TF.api("POST", "/ui/api/playground/export");
      box.replaceChildren(TF.el("div", { class: "alert ok", id: "export-ok" },
        `Exported ${r.pairs} preference pair(s) to `,
        TF.el("a", { href: `/ui/files/${r.file.id}`, "data-export-file": r.file.id }, r.file.filename),
        " (purpose fine-tune) — it is in Files. ",
        TF.el("a", { class: "btn", id: "train-dpo", href: newJobUrl(r.file.id) }, "New DPO job from this file…")));
    } catch (e) { TF.showError(box, e.message); }
  });

  // ---- one click: the ratings -> a DPO job on the chosen model -> old vs new side by side ----
  const trainSel = $("train-model");
  function newJobUrl(fileId) {  // the create form, prefilled, for what the one click does not set
    const model = (trainSel && trainSel.value) || "";
    return `/ui/jobs/new?${new URLSearchParams({ training_file: fileId, method: "dpo", model })}`;
  }
  if (!trainSel) return;  // no models at all


  // The models in the compare slots (fine-tuned first: SFT then DPO is the usual chain).
  function refreshTrainModels() {
    const picked = [...new Set(slots.map((s) => s.value).filter(Boolean))];
    const keep = trainSel.value;
    const ordered = [...picked.filter((m) => m.startsWith("ft:")), ...picked.filter((m) => !m.startsWith("ft:"))];
    trainSel.replaceChildren(...ordered.map((m) => TF.el("option", { value: m }, m)));
    if (ordered.includes(keep)) trainSel.value = keep;
    $("train-btn").disabled = !ordered.length || watching;
  }
  slots.forEach((s) => s.addEventListener("change", refreshTrainModels));

  let watching = false;
  function showTraining(job, live) {
    const last = live && live.points.length ? live.points[live.points.length - 1] : null;
    const total = live && [...live.events].reverse().map((e) => e.data && e.data.total_steps).find(Boolean);
    const step = last ? last.step : 0;
    const parts = [`${job.status.replace("_", " ")}`];
    if (last) parts.push(`step ${step}${total ? ` of ${total}` : ""}`, `loss ${TF.fix(last.train_loss, 3)}`);
    if (last && last.train_rewards_accuracy !== undefined) parts.push(`reward accuracy ${TF.fix(last.train_rewards_accuracy, 2)}`);
    const bar = TF.el("div", { class: "progress" }, TF.el("div", { style: `width:${total ? Math.round(100 * step / total) : 0}%` }));
    $("train-status").replaceChildren(TF.el("div", { class: "alert", id: "train-job", "data-job": job.id, "data-status": job.status },
      "DPO job ", TF.el("a", { href: `/ui/jobs/${job.id}` }, job.id), ` on ${job.model}: `,
      TF.el("b", { id: "train-progress", text: parts.join(" · ") }), bar));
  }

  // Poll the job (the job page's own live endpoint) until it ends.
  async function watch(jobId) {
    watching = true;
    $("train-btn").disabled = true;
    let after = 0, live = null;
    const points = [], events = [];
    try {
      for (;;) {
        live = await TF.api("GET", `/ui/api/jobs/${jobId}/live?after=${after}`);
        points.push(...live.points); events.push(...live.events);
        after = live.next;
        showTraining(live.job, { points, events });
        if (live.terminal && !live.more) break;
        if (!live.more) await new Promise((r) => setTimeout(r, 1000));
      }
    } catch (e) {
      TF.showError($("train-status"), e.message);
      return;
    } finally {
      watching = false;
      refreshTrainModels();
    }
    const job = live.job;
    if (job.status !== "succeeded") {
      const why = job.error ? `${job.error.code}: ${job.error.message}` : `The job was ${job.status}.`;
      $("train-status").append(TF.el("div", { class: "alert error", role: "alert", id: "train-error", text: why }));
      return;
    }
    // the old model beside the new one, in the compare below
    const pick = [job.model, job.fine_tuned_model, "", ""];
    slots.forEach((sel, i) => {
      if (pick[i] && ![...sel.options].some((o) => o.value === pick[i])) sel.append(TF.el("option", { value: pick[i] }, pick[i]));
      sel.value = pick[i];
    });
    refreshTrainModels();
    trainSel.value = job.fine_tuned_model;  // another round of ratings trains on from the new model
    const again = TF.el("button", { class: "primary", id: "compare-new" }, "Compare old and new on this conversation");
    again.addEventListener("click", () => { $("user").focus(); if ($("user").value.trim()) $("run-btn").click(); });
    $("train-status").append(TF.el("div", { class: "alert ok", id: "train-done" },
      "Trained ", TF.el("b", { class: "mono", id: "train-new-model", text: job.fine_tuned_model }),
      ". The compare below now holds the old model and the new one. ", again));
  }

  $("train-btn").addEventListener("click", async () => {
    $("train-status").replaceChildren();
    $("train-btn").disabled = true;
    try {
      const hyperparameters = {};  // only those filled in; numbers as numbers, the server checks them
      for (const input of document.querySelectorAll("[data-train-hp]")) {
        const v = input.value.trim();
        if (v) hyperparameters[input.dataset.trainHp] = v === "auto" || isNaN(Number(v)) ? v : Number(v);
      }
      const r = await TF.api("POST", "/ui/api/playground/train", { model: trainSel.value, hyperparameters });
      history.replaceState(null, "", `?${new URLSearchParams({ models: slots.map((s) => s.value).filter(Boolean).join(","), train_job: r.job.id })}`);
      await watch(r.job.id);
    } catch (e) {
      TF.showError($("train-status"), e.message);
      $("train-btn").disabled = false;
    }
  });

  $("train-options").addEventListener("click", async (ev) => {
    ev.preventDefault();
    try {
      const r = await TF.api("POST", "/ui/api/playground/export");
      location.href = newJobUrl(r.file.id);
    } catch (e) { TF.showError($("train-status"), e.message); }
  });

  refreshTrainModels();
  const resume = new URLSearchParams(location.search).get("train_job");  // a reload keeps watching
  if (resume) watch(resume);
})();
