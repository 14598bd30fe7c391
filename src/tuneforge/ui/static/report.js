// Render a validation report (training.data.ValidationReport.to_dict()) as a card section.
"use strict";

TF.renderReport = function (r, title) {
  const { el } = TF;
  const head = r.ok
    ? el("div", { class: "alert ok", "data-report-ok": "1" }, `${title}: ${r.n_examples} examples, format ${r.format || "unknown"} — ready to train.`)
    : el("div", { class: "alert error", "data-report-ok": "0" }, `${title}: ${r.n_errors} problem(s) found${r.n_examples ? ` (${r.n_examples} valid examples)` : ""}. A job with this file would fail; fix the lines below.`);
  const parts = [head];
  if (r.errors.length) {
    parts.push(el("table", { class: "report-errors" },
      el("thead", {}, el("tr", {}, el("th", { text: "Line" }), el("th", { text: "Field" }), el("th", { text: "Problem" }))),
      el("tbody", {}, r.errors.map((e) => el("tr", {},
        el("td", { class: "mono", text: e.line === null ? "file" : e.line }),
        el("td", { class: "mono", text: e.param || "" }),
        el("td", { text: e.message }))))));
    if (r.n_errors > r.errors.length) parts.push(el("p", { class: "hint", text: `… and ${r.n_errors - r.errors.length} more` }));
  }
  if (!r.n_examples) {   // nothing valid to count: no statistics, no epochs, no estimate
    for (const w of r.warnings) parts.push(el("div", { class: "alert warn", text: w }));
    return el("div", { class: "report", "data-file": r.file_id }, parts);
  }
  const stat = (k, v) => el("div", { class: "stat" }, el("div", { class: "v", text: v }), el("div", { class: "k", text: k }));
  const tok = r.total_tokens_per_example, trained = r.trained_tokens_per_example;
  parts.push(el("div", { class: "grid3", style: "margin-top:10px" },
    stat("examples", TF.num(r.n_examples)),
    stat(r.n_epochs_auto ? "epochs (auto)" : "epochs", r.n_epochs),
    stat("estimated trained tokens", TF.num(r.estimated_trained_tokens)),
    stat("tokens / example (mean)", tok ? tok.mean.toFixed(1) : "—"),
    stat("trained tokens / example (mean)", trained ? trained.mean.toFixed(1) : "—"),
    stat("estimated cost", r.estimated_cost === null ? "—" : `$${r.estimated_cost.toFixed(2)}`)));
  if (r.estimated_cost !== null && r.price_source) {
    parts.push(el("p", { class: "hint", "data-price-source": "1", text: `Cost at $${r.price_per_million_tokens} per 1M trained tokens: ${r.price_source}.` }));
  }
  if (tok) {
    parts.push(el("table", { style: "margin-top:10px" },
      el("thead", {}, el("tr", {}, ["", "min", "median", "mean", "p90", "max"].map((h) => el("th", { class: h ? "num" : "", text: h })))),
      el("tbody", {}, [["messages", r.messages_per_example], ["total tokens", tok], ["trained tokens", trained]].filter(([, d]) => d).map(([k, d]) =>
        el("tr", {}, el("td", { text: k }), ...[d.min, d.median, d.mean.toFixed(1), d.p90, d.max].map((v) => el("td", { class: "num", text: v })))))));
  }
  for (const w of r.warnings) parts.push(el("div", { class: "alert warn", text: w }));
  return el("div", { class: "report", "data-file": r.file_id }, parts);
};
