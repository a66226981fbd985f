// Management (issue 7) and the audit log (issue 8), for administrators: the consortium's
// facilities, reading centres, links, users and routing rules; readers' duty, qualifications and
// caps; adding a user or facility (the API checks all-or-nothing and names every problem);
// webhooks and their failed deliveries; DICOM nodes; and the audit trail with filters.

import { api, SessionEnded } from "/static/js/api.js";
import { dataTable } from "/static/js/charts.js";
import { fill, h, loadStyle } from "/static/js/dom.js";
import { addStrings, formatDateTime, label, t } from "/static/js/i18n.js";
import { addRoute } from "/static/js/router.js";
import { errorBox, notice, pageHead } from "/static/js/ui.js";

addStrings({
  en: {
    "nav.admin": "Management",
    "nav.audit": "Audit log",
    "admin.title": "Consortium management",
    "admin.tabs": "Sections",
    "admin.tab.facilities": "Facilities",
    "admin.tab.centres": "Reading centres",
    "admin.tab.users": "Users and readers",
    "admin.tab.rules": "Routing",
    "admin.tab.webhooks": "Webhooks",
    "admin.tab.nodes": "DICOM nodes",
    "admin.code": "Code",
    "admin.name": "Name",
    "admin.tier": "Tier",
    "admin.parent": "Grid lead",
    "admin.aeTitle": "AE title",
    "admin.networks": "DICOM networks",
    "admin.facility": "Facility",
    "admin.service": "Service",
    "admin.modalities": "Modalities",
    "admin.subspecialties": "Subspecialties",
    "admin.hours": "Service hours",
    "admin.openNow": "Open now",
    "admin.links": "Reading links",
    "admin.origin": "Origin facility",
    "admin.centre": "Reading centre",
    "admin.modality": "Modality",
    "admin.anyModality": "any",
    "admin.username": "Username",
    "admin.displayName": "Name",
    "admin.role": "Role",
    "admin.qualifications": "Qualifications",
    "admin.qualificationsHint": "Modalities or subspecialties, separated by commas (empty: all).",
    "admin.maySignFinal": "May sign final",
    "admin.maxOpen": "Open case cap",
    "admin.maxOpenHint": "Empty or 0: no cap.",
    "admin.onDuty": "On duty",
    "admin.offDuty": "Off duty",
    "admin.active": "Active",
    "admin.password": "Initial password",
    "admin.lastSeen": "Last seen",
    "admin.actions": "Actions",
    "admin.edit": "Edit",
    "admin.save": "Save",
    "admin.cancel": "Cancel",
    "admin.saved": "Saved.",
    "admin.yes": "Yes",
    "admin.no": "No",
    "admin.unlimited": "no cap",
    "admin.addFacility": "Add a facility",
    "admin.addUser": "Add a user",
    "admin.add": "Add",
    "admin.added": "{what} added.",
    "admin.problems": "Not saved: {n} problem(s). Nothing was changed.",
    "admin.editUser": "Edit {name}",
    "admin.dutyToggle": "Switch duty of {name}",
    "admin.rules": "Routing rules (first match wins)",
    "admin.position": "Order",
    "admin.enabled": "Enabled",
    "admin.criteria": "When",
    "admin.noRules": "No routing rules: cases go by reading links.",
    "admin.webhooks": "Webhooks",
    "admin.noWebhooks": "No webhooks.",
    "admin.kind": "Kind",
    "admin.url": "Address",
    "admin.events": "Events",
    "admin.failed": "Failed deliveries",
    "admin.noFailed": "No failed deliveries.",
    "admin.webhook": "Webhook",
    "admin.case": "Case",
    "admin.attempts": "Attempts",
    "admin.lastError": "Last error",
    "admin.created": "Created",
    "admin.retry": "Retry",
    "admin.retried": "Delivery {id} queued again.",
    "admin.nodes": "DICOM nodes (C-MOVE destinations)",
    "admin.noNodes": "No DICOM nodes.",
    "admin.host": "Host",
    "admin.port": "Port",
    "admin.description": "Description",
    "admin.addNode": "Add a DICOM node",
    "admin.delete": "Delete",
    "admin.deleteNode": "Delete DICOM node {ae}?",
    "admin.deleted": "{what} deleted.",
    "admin.none": "—",
    "tier.village": "Village clinic",
    "tier.township": "Township health centre",
    "tier.county": "County hospital",
    "tier.tertiary": "Tertiary hospital",
    "service.imaging": "Imaging",
    "service.ecg": "ECG",
    "audit.title": "Audit log",
    "audit.intro": "Who read or changed which patient data, when and from where. Newest first.",
    "audit.user": "User",
    "audit.action": "Action",
    "audit.case": "Case no.",
    "audit.patient": "Patient ID",
    "audit.resourceType": "Object type",
    "audit.resourceId": "Object id",
    "audit.from": "From",
    "audit.to": "To",
    "audit.remote": "From address",
    "audit.search": "Search",
    "audit.reset": "Clear",
    "audit.at": "Time",
    "audit.object": "Object",
    "audit.detail": "Detail",
    "audit.more": "Older entries",
    "audit.empty": "No entries match.",
    "audit.caption": "Audit entries, newest first",
    "audit.system": "system",
    "audit.count": "{n} entries shown",
  },
  "zh-CN": {
    "nav.admin": "系统管理",
    "nav.audit": "审计日志",
    "admin.title": "医联体管理",
    "admin.tabs": "管理项目",
    "admin.tab.facilities": "医疗机构",
    "admin.tab.centres": "诊断中心",
    "admin.tab.users": "用户与医生",
    "admin.tab.rules": "分派规则",
    "admin.tab.webhooks": "消息推送",
    "admin.tab.nodes": "DICOM 节点",
    "admin.code": "编码",
    "admin.name": "名称",
    "admin.tier": "级别",
    "admin.parent": "牵头单位",
    "admin.aeTitle": "AE 标题",
    "admin.networks": "DICOM 网段",
    "admin.facility": "所属机构",
    "admin.service": "服务类型",
    "admin.modalities": "检查设备",
    "admin.subspecialties": "亚专业",
    "admin.hours": "服务时间",
    "admin.openNow": "当前开放",
    "admin.links": "诊断协作关系",
    "admin.origin": "申请机构",
    "admin.centre": "诊断中心",
    "admin.modality": "检查设备",
    "admin.anyModality": "不限",
    "admin.username": "用户名",
    "admin.displayName": "姓名",
    "admin.role": "角色",
    "admin.qualifications": "执业资质",
    "admin.qualificationsHint": "检查设备或亚专业，以逗号分隔（留空表示不限）。",
    "admin.maySignFinal": "可签发终审报告",
    "admin.maxOpen": "在办病例上限",
    "admin.maxOpenHint": "留空或 0 表示不限。",
    "admin.onDuty": "在岗",
    "admin.offDuty": "离岗",
    "admin.active": "启用",
    "admin.password": "初始密码",
    "admin.lastSeen": "最近在线",
    "admin.actions": "操作",
    "admin.edit": "编辑",
    "admin.save": "保存",
    "admin.cancel": "取消",
    "admin.saved": "已保存。",
    "admin.yes": "是",
    "admin.no": "否",
    "admin.unlimited": "不限",
    "admin.addFacility": "新增医疗机构",
    "admin.addUser": "新增用户",
    "admin.add": "新增",
    "admin.added": "已新增{what}。",
    "admin.problems": "未保存：共 {n} 个问题，未做任何更改。",
    "admin.editUser": "编辑 {name}",
    "admin.dutyToggle": "切换 {name} 的在岗状态",
    "admin.rules": "分派规则（按顺序匹配第一条）",
    "admin.position": "顺序",
    "admin.enabled": "启用",
    "admin.criteria": "匹配条件",
    "admin.noRules": "暂无分派规则：病例按诊断协作关系分派。",
    "admin.webhooks": "消息推送",
    "admin.noWebhooks": "暂无消息推送配置。",
    "admin.kind": "类型",
    "admin.url": "地址",
    "admin.events": "事件",
    "admin.failed": "推送失败记录",
    "admin.noFailed": "暂无推送失败记录。",
    "admin.webhook": "推送配置",
    "admin.case": "病例",
    "admin.attempts": "尝试次数",
    "admin.lastError": "最近错误",
    "admin.created": "创建时间",
    "admin.retry": "重新推送",
    "admin.retried": "推送 {id} 已重新排队。",
    "admin.nodes": "DICOM 节点（C-MOVE 目标）",
    "admin.noNodes": "暂无 DICOM 节点。",
    "admin.host": "主机",
    "admin.port": "端口",
    "admin.description": "说明",
    "admin.addNode": "新增 DICOM 节点",
    "admin.delete": "删除",
    "admin.deleteNode": "删除 DICOM 节点 {ae}？",
    "admin.deleted": "已删除{what}。",
    "admin.none": "—",
    "tier.village": "村卫生室",
    "tier.township": "乡镇卫生院",
    "tier.county": "县级医院",
    "tier.tertiary": "三级医院",
    "service.imaging": "影像",
    "service.ecg": "心电",
    "audit.title": "审计日志",
    "audit.intro": "记录谁在何时、从何处查看或修改了哪些患者数据，最新在前。",
    "audit.user": "用户",
    "audit.action": "操作",
    "audit.case": "病例号",
    "audit.patient": "患者编号",
    "audit.resourceType": "对象类型",
    "audit.resourceId": "对象编号",
    "audit.from": "开始日期",
    "audit.to": "结束日期",
    "audit.remote": "来源地址",
    "audit.search": "查询",
    "audit.reset": "清除",
    "audit.at": "时间",
    "audit.object": "对象",
    "audit.detail": "详情",
    "audit.more": "更早的记录",
    "audit.empty": "没有符合条件的记录。",
    "audit.caption": "审计记录，最新在前",
    "audit.system": "系统",
    "audit.count": "已显示 {n} 条",
  },
});

const TABS = ["facilities", "centres", "users", "rules", "webhooks", "nodes"];
const TIERS = ["village", "township", "county", "tertiary"];

// ----- shared pieces -------------------------------------------------------------------------
/** The problems of a refused change: the consortium API lists every one in its message. */
export function problemsOf(err) {
  if (err.code !== "bad_consortium") return null;
  const cut = err.message.indexOf("): ");
  return cut < 0 ? [err.message] : err.message.slice(cut + 3).split("; ");
}

function problemBox(err) {
  const problems = problemsOf(err);
  if (!problems) return errorBox(err);
  return h("div", { class: "alert alert-error problems", role: "alert" },
    h("strong", null, t("admin.problems", { n: problems.length })),
    h("ul", null, problems.map((p) => h("li", { "data-problem": "" }, p))));
}

function yesNo(v) {
  return v ? t("admin.yes") : t("admin.no");
}

function list(values) {
  return values && values.length ? values.join(", ") : t("admin.none");
}

function splitList(text) {
  return text.split(/[,，\s]+/).map((s) => s.trim()).filter(Boolean);
}

function input(id, labelText, props = {}, hint = null) {
  const control = h("input", { id, name: id, ...props });
  return [h("div", { class: "field" }, h("label", { for: id }, labelText), control,
    hint ? h("span", { class: "muted small" }, hint) : null), control];
}

function selectField(id, labelText, options, value = null) {
  const control = h("select", { id, name: id }, options.map(([v, text]) => h("option", { value: v }, text)));
  if (value !== null) control.value = value;
  return [h("div", { class: "field" }, h("label", { for: id }, labelText), control), control];
}

function checkField(id, labelText, checked) {
  const control = h("input", { id, name: id, type: "checkbox" });
  control.checked = Boolean(checked);
  return [h("div", { class: "field field-check" }, control, h("label", { for: id }, labelText)), control];
}

function card(id, title, ...content) {
  return h("section", { class: "card", id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title), content);
}

// ----- management ----------------------------------------------------------------------------
function adminView(ctx) {
  loadStyle("dashboard");
  loadStyle("admin");
  const { main, state } = ctx;
  const tab = TABS.includes(ctx.query.get("tab")) ? ctx.query.get("tab") : "users";
  const body = h("div", { id: "admin-body" }, h("p", { class: "muted" }, t("loading")));
  const flash = h("div", { id: "admin-flash", "aria-live": "polite" });
  main.append(
    pageHead(t("admin.title")),
    h("nav", { class: "admin-tabs", "aria-label": t("admin.tabs") }, TABS.map((name) =>
      h("a", {
        href: `#/admin?tab=${name}`,
        "data-tab": name,
        class: "admin-tab",
        "aria-current": name === tab ? "page" : null,
      }, t(`admin.tab.${name}`)))),
    flash,
    body,
  );

  function say(text, kind = "success") {
    flash.replaceChildren(notice(text, kind));
  }

  const loaders = {
    facilities: async () => {
      const { facilities } = await api("GET", "/consortium/facilities");
      return [facilityTable(facilities), addFacilityForm(facilities, reload, say)];
    },
    centres: async () => {
      const [{ centres }, { links }] = await Promise.all([
        api("GET", "/consortium/centres"), api("GET", "/consortium/links")]);
      return [centreTable(centres), linkTable(links)];
    },
    users: async () => {
      const [{ users }, { facilities }, { centres }] = await Promise.all([
        api("GET", "/consortium/users"), api("GET", "/consortium/facilities"), api("GET", "/consortium/centres")]);
      return [userTable(users, reload, say), addUserForm(facilities, centres, reload, say)];
    },
    rules: async () => {
      const { rules } = await api("GET", "/consortium/rules");
      return [ruleTable(rules)];
    },
    webhooks: async () => {
      const [{ webhooks }, failed] = await Promise.all([
        api("GET", "/webhooks"), api("GET", "/webhooks/deliveries?status=failed&limit=100")]);
      return [webhookTable(webhooks), failedTable(failed.deliveries, reload, say)];
    },
    nodes: async () => {
      const [{ nodes }, { facilities }] = await Promise.all([
        api("GET", "/dicom-nodes"), api("GET", "/consortium/facilities")]);
      return [nodeTable(nodes, facilities, reload, say), addNodeForm(facilities, reload, say)];
    },
  };

  async function reload() {
    main.dataset.state = "loading";
    try {
      const content = await loaders[tab]();
      if (!ctx.isCurrent()) return;
      state.cache.set(`admin:${tab}`, true);
      fill(body, content);
      main.dataset.state = "ready";
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      fill(body, errorBox(err));
      main.dataset.state = "error";
    }
  }
  reload();
}

function facilityTable(facilities) {
  return card("admin-facilities", t("admin.tab.facilities"), dataTable(t("admin.tab.facilities"), [
    { title: t("admin.code"), cell: (f) => h("code", null, f.code) },
    { title: t("admin.name"), cell: (f) => f.name },
    { title: t("admin.tier"), cell: (f) => label("tier", f.tier) },
    { title: t("admin.parent"), cell: (f) => f.parent || t("admin.none") },
    { title: t("admin.aeTitle"), cell: (f) => f.ae_title || t("admin.none") },
    { title: t("admin.networks"), cell: (f) => f.dicom_networks || t("admin.none") },
  ], facilities, { id: "facilities-table" }));
}

function addFacilityForm(facilities, reload, say) {
  const [codeF, code] = input("fac-code", t("admin.code"), { required: true, maxlength: 32 });
  const [nameF, name] = input("fac-name", t("admin.name"), { required: true });
  const [tierF, tier] = selectField("fac-tier", t("admin.tier"), TIERS.map((x) => [x, label("tier", x)]), "township");
  const [parentF, parent] = selectField("fac-parent", t("admin.parent"),
    [["", t("admin.none")], ...facilities.map((f) => [f.code, `${f.code} · ${f.name}`])]);
  const [aeF, ae] = input("fac-ae", t("admin.aeTitle"), { maxlength: 16 });
  const errors = h("div", { class: "form-errors" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, t("admin.add"));
  return card("admin-add-facility", t("admin.addFacility"), h("form", {
    id: "facility-form",
    class: "admin-form",
    noValidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      errors.replaceChildren();
      submit.disabled = true;
      const body = { code: code.value.trim(), name: name.value.trim(), tier: tier.value };
      if (parent.value) body.parent = parent.value;
      if (ae.value.trim()) body.ae_title = ae.value.trim();
      try {
        await api("POST", "/consortium/facilities", body);
        say(t("admin.added", { what: body.code }));
        await reload();
      } catch (err) {
        if (!(err instanceof SessionEnded)) errors.replaceChildren(problemBox(err));
      } finally {
        submit.disabled = false;
      }
    },
  }, errors, h("div", { class: "form-row" }, codeF, nameF, tierF, parentF, aeF), submit));
}

function centreTable(centres) {
  return card("admin-centres", t("admin.tab.centres"), dataTable(t("admin.tab.centres"), [
    { title: t("admin.code"), cell: (c) => h("code", null, c.code) },
    { title: t("admin.name"), cell: (c) => c.name },
    { title: t("admin.facility"), cell: (c) => c.facility },
    { title: t("admin.service"), cell: (c) => label("service", c.service) },
    { title: t("admin.modalities"), cell: (c) => list(c.modalities) },
    { title: t("admin.subspecialties"), cell: (c) => list(c.subspecialties) },
    { title: t("admin.hours"), cell: (c) => c.service_hours || t("admin.none") },
    { title: t("admin.openNow"), cell: (c) => (c.open_now === null ? t("admin.none") : yesNo(c.open_now)) },
  ], centres, { id: "centres-table" }));
}

function linkTable(links) {
  return card("admin-links", t("admin.links"), dataTable(t("admin.links"), [
    { title: t("admin.origin"), cell: (l) => l.origin },
    { title: t("admin.centre"), cell: (l) => l.centre },
    { title: t("admin.modality"), cell: (l) => l.modality || t("admin.anyModality") },
  ], links));
}

function userTable(users, reload, say) {
  const table = dataTable(t("admin.tab.users"), [
    { title: t("admin.username"), cell: (u) => h("code", null, u.username) },
    { title: t("admin.displayName"), cell: (u) => u.display_name },
    { title: t("admin.role"), cell: (u) => label("role", u.role) },
    { title: t("admin.facility"), cell: (u) => [u.facility, u.centre ? h("span", { class: "muted small block" }, u.centre) : null] },
    { title: t("admin.qualifications"), cell: (u) => (u.role === "reader" ? list(u.qualifications) : t("admin.none")) },
    { title: t("admin.maySignFinal"), cell: (u) => (u.role === "reader" ? yesNo(u.may_sign_final) : t("admin.none")) },
    { title: t("admin.maxOpen"), cell: (u) => (u.role !== "reader" ? t("admin.none") : u.max_open_cases || t("admin.unlimited")) },
    { title: t("admin.onDuty"), cell: (u) => (u.role === "reader" ? dutyButton(u, reload, say) : t("admin.none")) },
    { title: t("admin.active"), cell: (u) => yesNo(u.active) },
    { title: t("admin.actions"), cell: (u) => (u.role === "reader" ? h("button", {
      type: "button", class: "btn btn-ghost btn-small", "data-action": "edit",
      "aria-label": t("admin.editUser", { name: u.username }),
      onclick: (event) => openEditor(event.target.closest("tr"), u, reload, say),
    }, t("admin.edit")) : null) },
  ], users, { id: "users-table" });
  table.querySelectorAll("tbody tr").forEach((tr, i) => {
    tr.dataset.user = users[i].username;
    tr.dataset.userId = users[i].id;
  });
  return card("admin-users", t("admin.tab.users"), table);
}

function dutyButton(u, reload, say) {
  const button = h("button", {
    type: "button",
    class: `btn btn-small duty ${u.on_duty ? "duty-on" : "duty-off"}`,
    "data-action": "duty",
    "aria-pressed": u.on_duty ? "true" : "false",
    "aria-label": t("admin.dutyToggle", { name: u.username }),
    onclick: async () => {
      button.disabled = true;
      try {
        await api("PATCH", `/consortium/users/${u.id}`, { on_duty: !u.on_duty });
        say(t("admin.saved"));
        await reload();
      } catch (err) {
        button.disabled = false;
        if (!(err instanceof SessionEnded)) button.closest("td").append(problemBox(err));
      }
    },
  }, u.on_duty ? t("admin.onDuty") : t("admin.offDuty"));
  return button;
}

function openEditor(tr, u, reload, say) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("edit-row")) {
    next.remove();
    return;
  }
  const p = `edit-${u.id}`;
  const [qualF, qual] = input(`${p}-qual`, t("admin.qualifications"), { value: (u.qualifications || []).join(", ") },
    t("admin.qualificationsHint"));
  const [capF, cap] = input(`${p}-cap`, t("admin.maxOpen"), { value: u.max_open_cases ?? "", inputmode: "numeric" },
    t("admin.maxOpenHint"));
  const [signF, sign] = checkField(`${p}-sign`, t("admin.maySignFinal"), u.may_sign_final);
  const [dutyF, duty] = checkField(`${p}-duty`, t("admin.onDuty"), u.on_duty);
  const [activeF, active] = checkField(`${p}-active`, t("admin.active"), u.active);
  const errors = h("div", { class: "form-errors" });
  const row = h("tr", { class: "edit-row" }, h("td", { colspan: tr.children.length },
    h("form", {
      class: "admin-form",
      "data-edit": u.username,
      "aria-label": t("admin.editUser", { name: u.username }),
      onsubmit: async (event) => {
        event.preventDefault();
        errors.replaceChildren();
        const raw = cap.value.trim();
        const body = {
          qualifications: splitList(qual.value),
          max_open_cases: raw === "" ? null : /^\d+$/.test(raw) ? Number(raw) : raw,
          may_sign_final: sign.checked,
          on_duty: duty.checked,
          active: active.checked,
        };
        try {
          await api("PATCH", `/consortium/users/${u.id}`, body);
          say(t("admin.saved"));
          await reload();
        } catch (err) {
          if (!(err instanceof SessionEnded)) errors.replaceChildren(problemBox(err));
        }
      },
    }, errors, h("div", { class: "form-row" }, qualF, capF, signF, dutyF, activeF),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "btn btn-primary" }, t("admin.save")),
      h("button", { type: "button", class: "btn btn-secondary", onclick: () => row.remove() }, t("admin.cancel"))))));
  tr.after(row);
  qual.focus();
}

function addUserForm(facilities, centres, reload, say) {
  const [userF, username] = input("user-username", t("admin.username"), { required: true, autocomplete: "off" });
  const [nameF, name] = input("user-name", t("admin.displayName"), { required: true });
  const [roleF, role] = selectField("user-role", t("admin.role"),
    ["reader", "clinic", "admin"].map((r) => [r, label("role", r)]), "reader");
  const [facF, facility] = selectField("user-facility", t("admin.facility"),
    [["", t("admin.none")], ...facilities.map((f) => [f.code, `${f.code} · ${f.name}`])]);
  const [centreF, centre] = selectField("user-centre", t("admin.centre"),
    [["", t("admin.none")], ...centres.map((c) => [c.code, `${c.code} · ${c.name}`])]);
  const [qualF, qual] = input("user-qual", t("admin.qualifications"), {}, t("admin.qualificationsHint"));
  const [pwF, password] = input("user-password", t("admin.password"), { type: "password", autocomplete: "new-password" });
  const errors = h("div", { class: "form-errors" });
  return card("admin-add-user", t("admin.addUser"), h("form", {
    id: "user-form",
    class: "admin-form",
    noValidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      errors.replaceChildren();
      const body = {
        username: username.value.trim(),
        display_name: name.value.trim(),
        role: role.value,
        facility: facility.value,
        password: password.value,
      };
      if (role.value === "reader") {
        body.centre = centre.value || null;
        body.qualifications = splitList(qual.value);
      }
      try {
        await api("POST", "/consortium/users", body);
        say(t("admin.added", { what: body.username }));
        await reload();
      } catch (err) {
        if (!(err instanceof SessionEnded)) errors.replaceChildren(problemBox(err));
      }
    },
  }, errors, h("div", { class: "form-row" }, userF, nameF, roleF, facF, centreF, qualF, pwF),
  h("button", { type: "submit", class: "btn btn-primary" }, t("admin.add"))));
}

function criteria(r) {
  const parts = [];
  for (const key of ["kinds", "modalities", "body_parts", "subspecialties", "priorities", "origins", "origin_tiers"]) {
    if (r[key] && r[key].length) parts.push(`${key}: ${r[key].join(", ")}`);
  }
  return parts.length ? parts.join(" · ") : t("admin.anyModality");
}

function ruleTable(rules) {
  return card("admin-rules", t("admin.rules"), rules.length ? dataTable(t("admin.rules"), [
    { title: t("admin.position"), cell: (r) => r.position, num: true },
    { title: t("admin.name"), cell: (r) => r.name },
    { title: t("admin.enabled"), cell: (r) => yesNo(r.enabled) },
    { title: t("admin.criteria"), cell: criteria },
    { title: t("admin.centre"), cell: (r) => r.centre },
  ], rules, { id: "rules-table" }) : h("p", { class: "muted empty" }, t("admin.noRules")));
}

function webhookTable(webhooks) {
  return card("admin-webhooks", t("admin.webhooks"), webhooks.length ? dataTable(t("admin.webhooks"), [
    { title: t("admin.name"), cell: (w) => w.name },
    { title: t("admin.kind"), cell: (w) => w.kind },
    { title: t("admin.url"), cell: (w) => h("code", { class: "wrap" }, w.url) },
    { title: t("admin.events"), cell: (w) => list(w.events) },
    { title: t("admin.active"), cell: (w) => yesNo(w.active) },
  ], webhooks, { id: "webhooks-table" }) : h("p", { class: "muted empty" }, t("admin.noWebhooks")));
}

function failedTable(deliveries, reload, say) {
  return card("admin-failed", t("admin.failed"), deliveries.length ? dataTable(t("admin.failed"), [
    { title: t("admin.created"), cell: (d) => formatDateTime(d.created_at, { seconds: false }) },
    { title: t("admin.webhook"), cell: (d) => d.webhook.name },
    { title: t("admin.kind"), cell: (d) => d.kind },
    { title: t("admin.case"), cell: (d) => (d.case_id ? h("a", { href: `#/cases/${d.case_id}` }, `#${d.case_id}`) : t("admin.none")) },
    { title: t("admin.attempts"), cell: (d) => d.attempts, num: true },
    { title: t("admin.lastError"), cell: (d) => h("span", { class: "small wrap" }, d.last_error || t("admin.none")) },
    { title: t("admin.actions"), cell: (d) => h("button", {
      type: "button", class: "btn btn-secondary btn-small", "data-action": "retry", "data-delivery": d.id,
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          await api("POST", `/webhooks/deliveries/${d.id}/retry`);
          say(t("admin.retried", { id: d.id }));
          await reload();
        } catch (err) {
          event.target.disabled = false;
          if (!(err instanceof SessionEnded)) event.target.closest("td").append(errorBox(err));
        }
      },
    }, t("admin.retry")) },
  ], deliveries, { id: "failed-table" }) : h("p", { class: "muted empty" }, t("admin.noFailed")));
}

function nodeTable(nodes, facilities, reload, say) {
  const facility = (id) => (facilities.find((f) => f.id === id) || { code: String(id) }).code;
  return card("admin-nodes", t("admin.nodes"), nodes.length ? dataTable(t("admin.nodes"), [
    { title: t("admin.aeTitle"), cell: (n) => h("code", null, n.ae_title) },
    { title: t("admin.host"), cell: (n) => n.host },
    { title: t("admin.port"), cell: (n) => n.port, num: true },
    { title: t("admin.facility"), cell: (n) => facility(n.facility_id) },
    { title: t("admin.description"), cell: (n) => n.description || t("admin.none") },
    { title: t("admin.actions"), cell: (n) => h("button", {
      type: "button", class: "btn btn-ghost btn-small danger", "data-action": "delete-node", "data-node": n.ae_title,
      onclick: async (event) => {
        if (!window.confirm(t("admin.deleteNode", { ae: n.ae_title }))) return;
        event.target.disabled = true;
        try {
          await api("DELETE", `/dicom-nodes/${n.id}`);
          say(t("admin.deleted", { what: n.ae_title }));
          await reload();
        } catch (err) {
          event.target.disabled = false;
          if (!(err instanceof SessionEnded)) event.target.closest("td").append(errorBox(err));
        }
      },
    }, t("admin.delete")) },
  ], nodes, { id: "nodes-table" }) : h("p", { class: "muted empty" }, t("admin.noNodes")));
}

function addNodeForm(facilities, reload, say) {
  const [aeF, ae] = input("node-ae", t("admin.aeTitle"), { required: true, maxlength: 16 });
  const [hostF, host] = input("node-host", t("admin.host"), { required: true });
  const [portF, port] = input("node-port", t("admin.port"), { required: true, inputmode: "numeric", value: "104" });
  const [facF, facility] = selectField("node-facility", t("admin.facility"),
    facilities.map((f) => [String(f.id), `${f.code} · ${f.name}`]));
  const [descF, desc] = input("node-desc", t("admin.description"), { maxlength: 200 });
  const errors = h("div", { class: "form-errors" });
  return card("admin-add-node", t("admin.addNode"), h("form", {
    id: "node-form",
    class: "admin-form",
    noValidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      errors.replaceChildren();
      const raw = port.value.trim();
      const body = {
        ae_title: ae.value.trim(),
        host: host.value.trim(),
        port: /^\d+$/.test(raw) ? Number(raw) : raw,
        facility_id: Number(facility.value),
        description: desc.value.trim(),
      };
      try {
        await api("POST", "/dicom-nodes", body);
        say(t("admin.added", { what: body.ae_title }));
        await reload();
      } catch (err) {
        if (!(err instanceof SessionEnded)) errors.replaceChildren(problemBox(err));
      }
    },
  }, errors, h("div", { class: "form-row" }, aeF, hostF, portF, facF, descF),
  h("button", { type: "submit", class: "btn btn-primary" }, t("admin.add"))));
}

// ----- audit log -----------------------------------------------------------------------------
const AUDIT_FIELDS = [
  ["user", "audit.user", {}],
  ["action", "audit.action", {}],
  ["case", "audit.case", { inputmode: "numeric" }],
  ["patient", "audit.patient", {}],
  ["resource_type", "audit.resourceType", {}],
  ["resource_id", "audit.resourceId", {}],
  ["from", "audit.from", { type: "date" }],
  ["to", "audit.to", { type: "date" }],
  ["remote", "audit.remote", {}],
];
const PAGE = 50;
const auditFilters = {};

function objectCell(e) {
  const text = e.resource_id ? `${e.resource_type} #${e.resource_id}` : e.resource_type;
  if ((e.resource_type === "case" || e.resource_type === "report") && /^\d+$/.test(e.resource_id)) {
    return h("a", { href: `#/cases/${e.resource_id}` }, text);
  }
  return text;
}

const DETAIL_SHOWN = 140;

/** The detail as key=value pairs, cut short in the table (the full text in its tooltip). */
function detailCell(detail) {
  const entries = Object.entries(detail || {});
  if (!entries.length) return t("admin.none");
  const text = entries.map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
  return h("span", { title: text }, text.length > DETAIL_SHOWN ? `${text.slice(0, DETAIL_SHOWN - 1)}…` : text);
}

function auditView(ctx) {
  loadStyle("dashboard");
  loadStyle("admin");
  const { main } = ctx;
  const inputs = {};
  const fieldsNodes = AUDIT_FIELDS.map(([name, key, props]) => {
    const [node, control] = input(`audit-${name.replace("_", "-")}`, t(key), props);
    control.value = auditFilters[name] || "";
    inputs[name] = control;
    return node;
  });
  const status = h("div", { id: "audit-status", "aria-live": "polite" });
  const tbody = h("tbody");
  const count = h("p", { class: "muted small", id: "audit-count" });
  const more = h("button", { type: "button", class: "btn btn-secondary", id: "audit-more", hidden: true,
    onclick: () => load(true) }, t("audit.more"));
  const table = h("div", { class: "table-scroll" }, h("table", { class: "data-table audit-table", id: "audit-table" },
    h("caption", { class: "sr-only" }, t("audit.caption")),
    h("thead", null, h("tr", null, ["audit.at", "audit.user", "audit.action", "audit.object", "audit.remote",
      "audit.detail"].map((k) => h("th", { scope: "col" }, t(k))))),
    tbody));
  let nextBefore = null;
  let shown = 0;

  main.append(
    pageHead(t("audit.title")),
    h("p", { class: "muted" }, t("audit.intro")),
    h("form", {
      class: "card admin-form audit-filters",
      id: "audit-filters",
      onsubmit: (event) => {
        event.preventDefault();
        for (const [name, control] of Object.entries(inputs)) auditFilters[name] = control.value.trim();
        load(false);
      },
    }, h("div", { class: "form-row" }, fieldsNodes),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "btn btn-primary", id: "audit-search" }, t("audit.search")),
      h("button", { type: "button", class: "btn btn-ghost", onclick: () => {
        for (const [name, control] of Object.entries(inputs)) {
          control.value = "";
          auditFilters[name] = "";
        }
        load(false);
      } }, t("audit.reset")))),
    status,
    h("section", { class: "card" }, table, count, more),
  );

  function row(e) {
    const who = e.user
      ? [h("strong", null, e.user.display_name || e.user.username),
        h("span", { class: "muted small block" }, `${e.user.username} · ${label("role", e.user.role)}`)]
      : h("span", { class: "muted" }, t("audit.system"));
    return h("tr", { "data-audit": e.id, "data-action": e.action, "data-user": e.user ? e.user.username : "",
      "data-object": `${e.resource_type}:${e.resource_id}` },
    h("td", { "data-label": t("audit.at") }, h("time", { datetime: e.at }, formatDateTime(e.at))),
    h("td", { "data-label": t("audit.user") }, who),
    h("td", { "data-label": t("audit.action") }, h("span", { class: "badge" }, e.action)),
    h("td", { "data-label": t("audit.object") }, objectCell(e)),
    h("td", { "data-label": t("audit.remote") }, h("code", null, e.remote || t("admin.none"))),
    h("td", { "data-label": t("audit.detail"), class: "small wrap audit-detail" }, detailCell(e.detail)));
  }

  async function load(append) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    for (const [name, value] of Object.entries(auditFilters)) if (value) q.set(name, value);
    if (auditFilters.from || auditFilters.to) q.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
    if (append && nextBefore) q.set("before", String(nextBefore));
    main.dataset.state = "loading";
    status.replaceChildren();
    try {
      const data = await api("GET", `/audit?${q}`);
      if (!ctx.isCurrent()) return;
      if (!append) {
        tbody.replaceChildren();
        shown = 0;
      }
      tbody.append(...data.entries.map(row));
      shown += data.entries.length;
      nextBefore = data.next_before;
      more.hidden = !nextBefore;
      count.textContent = shown ? t("audit.count", { n: shown }) : t("audit.empty");
      main.dataset.state = "ready";
    } catch (err) {
      if (err instanceof SessionEnded || !ctx.isCurrent()) return;
      main.dataset.state = "error";
      status.replaceChildren(errorBox(err));
    }
  }
  load(false);
}

addRoute({
  name: "admin",
  path: "admin",
  view: adminView,
  roles: ["admin"],
  nav: { label: "nav.admin", order: 80 },
});

addRoute({
  name: "audit",
  path: "audit",
  view: auditView,
  roles: ["admin"],
  nav: { label: "nav.audit", order: 90 },
});
