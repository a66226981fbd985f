// Priors (检查结果互认): the patient's other examinations in the consortium, with their final
// reports, as a side panel of the case view.

import { api, SessionEnded } from "/static/js/api.js";
import { fill, h } from "/static/js/dom.js";
import { addStrings, formatDateTime, label, t } from "/static/js/i18n.js";
import { errorBox, section } from "/static/js/ui.js";
import { addCasePanel } from "/static/js/views/case.js";

addStrings({
  en: {
    "workspace.priors": "Prior examinations",
    "workspace.priorsNone": "No prior examinations of this patient in the consortium.",
    "workspace.priorsLoading": "Looking for prior examinations…",
    "workspace.priorFinal": "Final report ({author}, {at})",
    "workspace.priorNoReport": "No final report",
  },
  "zh-CN": {
    "workspace.priors": "既往检查",
    "workspace.priorsNone": "医联体内未找到该患者的既往检查。",
    "workspace.priorsLoading": "正在查找既往检查…",
    "workspace.priorFinal": "审核报告（{author}，{at}）",
    "workspace.priorNoReport": "尚无审核报告",
  },
});

function priorsPanel(c, ctx) {
  if (ctx.user.role !== "reader" && ctx.user.role !== "admin") return null;
  const key = `priors:${c.id}`;
  const list = h("div", { id: `priors-${c.id}` }, h("p", { class: "muted small" }, t("workspace.priorsLoading")));
  function show(data) {
    const priors = data.priors || [];
    if (!priors.length) {
      fill(list, h("p", { class: "muted small" }, t("workspace.priorsNone")));
      return;
    }
    fill(list, h("ol", { class: "priors" }, priors.map((p) => h("li", { class: "prior", "data-prior": p.case_id },
      h("div", { class: "prior-head" },
        h("a", { href: `#/cases/${p.case_id}` }, p.date),
        " · ", (p.modalities || []).join(", ") || label("kind", p.kind),
        h("span", { class: "muted small" }, " · ", p.facility.name)),
      p.final_report
        ? h("details", null,
          h("summary", { class: "small" }, t("workspace.priorFinal", { author: p.final_report.author, at: formatDateTime(p.final_report.signed_at, { seconds: false }) })),
          h("div", { class: "report-text small" }, p.final_report.text))
        : h("p", { class: "muted small" }, t("workspace.priorNoReport"))))));
  }
  if (ctx.state.cache.has(key)) show(ctx.state.cache.get(key));
  api("GET", `/cases/${c.id}/priors`).then((data) => {
    if (!ctx.isCurrent()) return;
    ctx.state.cache.set(key, data);
    show(data);
  }).catch((err) => {
    if (err instanceof SessionEnded || !ctx.isCurrent()) return;
    fill(list, errorBox(err));
  });
  return section("workspace.priors", list);
}

addCasePanel({ name: "priors", column: "side", order: 20, render: priorsPanel });
