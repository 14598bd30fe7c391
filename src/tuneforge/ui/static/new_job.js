// Create-job form: prefill (re-run), uploads, the validation report, submit through the jobs service.
"use strict";

(function () {
  const { prefill } = TF.pageData();
  const $ = (id) => document.getElementById(id);
  const HP = ["n_epochs", "batch_size", "learning_rate_multiplier", "beta"];
  // beta belongs to DPO only (services/jobs.py refuses it elsewhere)
  const hpFor = () => HP.filter((k) => k !== "beta" || $("method").value === "dpo");
  const showBeta = () => { $("beta-field").hidden = $("method").value !== "dpo"; };
  $("method").addEventListener("change", showBeta);

  function setSelect(id, value) {
    if (!value) return;
    const sel = $(id);
    if (![...sel.options].some((o) => o.value === value)) sel.append(TF.el("option", { value }, value));
    sel.value = value;
  }
  if (prefill) {
    setSelect("training_file", prefill.training_file);
    setSelect("validation_file", prefill.validation_file);
    setSelect("model", prefill.model);
    setSelect("method", prefill.method);
    for (const k of HP) if (prefill.hyperparameters && prefill.hyperparameters[k] !== undefined) $(k).value = prefill.hyperparameters[k];
    showBeta();
    if (prefill.suffix) $("suffix").value = prefill.suffix;
    if (prefill.seed !== undefined && prefill.seed !== null) $("seed").value = prefill.seed;
    if (prefill.metadata) $("metadata").value = Object.entries(prefill.metadata).map(([k, v]) => `${k}=${v}`).join("\n");
    const wb = (prefill.integrations || []).find((i) => i.type === "wandb");
    if (wb) {
      $("wandb_project").value = wb.wandb.project || ""; $("wandb_name").value = wb.wandb.name || "";
      $("wandb_entity").value = wb.wandb.entity || ""; $("wandb_tags").value = (wb.wandb.tags || []).join(", ");
    }
  }

  async function checkData() {
    const box = $("report");
    const files = [["training_file", "Training file"], ["validation_file", "Validation file"]].filter(([id]) => $(id).value);
    if (!files.length) { TF.showError(box, "Choose or upload a training file first."); return; }
    box.replaceChildren(TF.el("p", { class: "muted", text: "Checking…" }));
    const epochs = /^\d+$/.test($("n_epochs").value.trim()) ? $("n_epochs").value.trim() : "auto";
    const out = [];
    for (const [id, title] of files) {
      const q = new URLSearchParams({ model: $("model").value, n_epochs: epochs, price: $("price").value || "0", file_param: id, method: $("method").value });
      try {
        out.push(TF.renderReport(await TF.api("GET", `/ui/api/files/${$(id).value}/report?${q}`), title));
      } catch (e) {
        out.push(TF.el("div", { class: "alert error", text: `${title}: ${e.message}` }));
      }
    }
    box.replaceChildren(...out);
  }
  $("check-data").addEventListener("click", checkData);
  TF.bindUploads((target) => { if (target === "training_file" || $("training_file").value) checkData(); });

  const value = (v) => {
    v = v.trim();
    if (v === "" || v === "auto") return "auto";
    const n = Number(v);
    return Number.isFinite(n) ? n : v;  // not a number: let the service explain what is wrong
  };

  function body() {
    const hyperparameters = {};
    for (const k of hpFor()) hyperparameters[k] = value($(k).value);
    const req = {
      model: $("model").value,
      training_file: $("training_file").value,
      method: { type: $("method").value, [$("method").value]: { hyperparameters } },
    };
    if ($("validation_file").value) req.validation_file = $("validation_file").value;
    if ($("suffix").value.trim()) req.suffix = $("suffix").value.trim();
    if ($("seed").value.trim()) req.seed = value($("seed").value);
    const meta = $("metadata").value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (meta.length) {
      req.metadata = {};
      for (const line of meta) {
        const i = line.indexOf("=");
        req.metadata[i < 0 ? line : line.slice(0, i).trim()] = i < 0 ? "" : line.slice(i + 1).trim();
      }
    }
    if ($("wandb_project").value.trim()) {
      const wandb = { project: $("wandb_project").value.trim() };
      if ($("wandb_name").value.trim()) wandb.name = $("wandb_name").value.trim();
      if ($("wandb_entity").value.trim()) wandb.entity = $("wandb_entity").value.trim();
      const tags = $("wandb_tags").value.split(",").map((t) => t.trim()).filter(Boolean);
      if (tags.length) wandb.tags = tags;
      req.integrations = [{ type: "wandb", wandb }];
    }
    return req;
  }

  $("job-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const n of document.querySelectorAll("[data-error-for]")) n.textContent = "";
    for (const n of document.querySelectorAll(".invalid")) n.classList.remove("invalid");
    $("form-error").replaceChildren();
    if (!$("training_file").value) {
      document.querySelector('[data-error-for="training_file"]').textContent = "Choose or upload a training file.";
      return;
    }
    $("create-job").disabled = true;
    try {
      const job = await TF.api("POST", "/ui/api/jobs", body());
      location.href = `/ui/jobs/${job.id}`;
    } catch (e) {
      // Put the service's message next to the field it names (param like method.supervised.hyperparameters.n_epochs).
      const param = e.param || "";
      const field = param.split(".").pop();
      const top = param.split(/[.[]/)[0];
      const slot = document.querySelector(`[data-error-for="${HP.includes(field) ? "hyperparameters" : top}"]`);
      if (HP.includes(field)) $(field).classList.add("invalid");
      else if ($(top)) $(top).classList.add("invalid");
      TF.showError($("form-error"), e.message);
      if (slot) slot.textContent = e.message;
      $("create-job").disabled = false;
    }
  });
})();
