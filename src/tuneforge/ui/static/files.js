// Files pages: upload with progress, delete, validate.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const btn = $("upload-btn");
  if (btn) {
    btn.addEventListener("click", async () => {
      const input = $("upload-file"), status = $("upload-status"), bar = $("upload-progress");
      if (!input.files[0]) { TF.showError(status, "Choose a file to upload."); return; }
      btn.disabled = true; bar.hidden = false; status.replaceChildren();
      try {
        const obj = await TF.upload(input.files[0], $("upload-purpose").value,
          (f) => { bar.firstElementChild.style.width = `${Math.round(f * 100)}%`; });
        status.replaceChildren(TF.el("div", { class: "alert ok" }, `Uploaded ${obj.filename} as ${obj.id}.`));
        setTimeout(() => location.reload(), 600);
      } catch (e) {
        TF.showError(status, e.message);
      } finally {
        btn.disabled = false; bar.hidden = true;
      }
    });
  }
  for (const del of document.querySelectorAll("[data-delete]")) {
    del.addEventListener("click", async () => {
      if (!confirm(`Delete ${del.dataset.name}? This cannot be undone.`)) return;
      try {
        await TF.api("DELETE", `/ui/api/files/${del.dataset.delete}`);
        if (del.dataset.after) location.href = del.dataset.after; else location.reload();
      } catch (e) { alert(e.message); }
    });
  }
  const validate = $("validate-btn");
  if (validate) {
    validate.addEventListener("click", async () => {
      const box = $("report");
      box.replaceChildren(TF.el("p", { class: "muted", text: "Checking…" }));
      try {
        const q = new URLSearchParams({ model: $("report-model").value });
        box.replaceChildren(TF.renderReport(await TF.api("GET", `/ui/api/files/${validate.dataset.file}/report?${q}`), "This file"));
      } catch (e) { TF.showError(box, e.message); }
    });
  }
})();
