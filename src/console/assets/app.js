// Ferry operator console. Plain JavaScript, no build step: every view is drawn from the JSON
// API under /api/ (the same operator actions as the CLI). Text is always inserted as text, never
// as HTML. The operator token lives in sessionStorage (this tab only) and is sent as a header,
// never as a cookie.
"use strict";

const STATES = ["pending", "sending", "retry_wait", "dead", "done"];
const STATE_LABEL = { pending: "pending", sending: "in flight", retry_wait: "retry wait", dead: "dead", done: "done" };
const store = window.sessionStorage;
let session = null;
let overviewTimer = null;
let detailTimer = null;
let overviewCache = null;

// ---------- helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const fmtNum = (n) => (n || 0).toLocaleString("en-US");
function pad(n) { return String(n).padStart(2, "0"); }
function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  return s >= 0 ? dur(s) + " ago" : "in " + dur(-s);
}
function dur(s) {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
function pill(state) { return h("span", { class: "pill " + state, "data-state": state }, STATE_LABEL[state] || state); }
function num(n, href) {
  const text = n ? fmtNum(n) : h("span", { class: "zero" }, "0");
  return h("td", { class: "num" }, n && href ? h("a", { href }, text) : text);
}
function toast(message, bad) {
  const t = $("#toast");
  t.textContent = message;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 7000 : 3500);
}
function rowsHref(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return "#/rows" + (s ? "?" + s : "");
}

// ---------- API ----------
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    const token = store.getItem("ferry.token");
    if (token) headers["Authorization"] = "Bearer " + token;
    const name = store.getItem("ferry.name");
    if (name) headers["X-Ferry-Operator"] = name;
  }
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit" });
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

// ---------- session / unlock ----------
function unlocked() { return !!store.getItem("ferry.token"); }
function canAct() { return session && session.actions_enabled && unlocked(); }
function drawSession() {
  $("#database").textContent = session ? session.database : "";
  const mode = $("#mode");
  mode.textContent = session && session.relay ? "served by the relay" : "console only";
  mode.title = session && session.relay ? "ferry run: circuit states are live" : "ferry console: no relay in this process";
  const lock = $("#lock");
  lock.classList.toggle("unlocked", canAct());
  if (!session || !session.actions_enabled) {
    lock.textContent = "Read-only";
    lock.title = "No operator token is configured (FERRY_CONSOLE_TOKEN): actions are off";
    lock.disabled = true;
  } else if (unlocked()) {
    lock.textContent = "Actions on" + (store.getItem("ferry.name") ? " · " + store.getItem("ferry.name") : "");
    lock.title = "Click to lock again (forget the token in this tab)";
    lock.disabled = false;
  } else {
    lock.textContent = "Unlock actions";
    lock.title = "Enter the operator token to retry and cancel";
    lock.disabled = false;
  }
}
function openUnlock() {
  const d = $("#unlock-dialog");
  $("#unlock-error").hidden = true;
  $("#unlock-token").value = "";
  $("#unlock-name").value = store.getItem("ferry.name") || "";
  d.showModal();
  $("#unlock-token").focus();
}
async function submitUnlock(ev) {
  ev.preventDefault();
  const token = $("#unlock-token").value.trim();
  const name = $("#unlock-name").value.trim();
  store.setItem("ferry.token", token);
  if (name) store.setItem("ferry.name", name); else store.removeItem("ferry.name");
  try {
    await api("POST", "/api/session/check", {});
    $("#unlock-dialog").close();
    drawSession();
    toast("Actions unlocked for this tab");
    route();
  } catch (e) {
    store.removeItem("ferry.token");
    const err = $("#unlock-error");
    err.textContent = e.message;
    err.hidden = false;
  }
}

// A confirmation with a reason. `run(reason)` does the action; its error stays in the dialog.
function confirmAction({ title, body, ok, danger, reasonHint, reasonRequired, run }) {
  const d = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  const b = $("#confirm-body");
  b.replaceChildren(...[].concat(body));
  $("#confirm-reason").value = "";
  $("#confirm-reason").required = !!reasonRequired;
  $("#confirm-reason-hint").textContent = reasonHint || "";
  const okBtn = $("#confirm-ok");
  okBtn.textContent = ok;
  okBtn.className = danger ? "danger" : "primary";
  okBtn.disabled = false;
  $("#confirm-error").hidden = true;
  $("#confirm-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const reason = $("#confirm-reason").value.trim();
    if (reasonRequired && !reason) {
      $("#confirm-error").textContent = "Say why: the reason is recorded with the action.";
      $("#confirm-error").hidden = false;
      return;
    }
    okBtn.disabled = true;
    try {
      await run(reason || undefined);
      d.close();
    } catch (e) {
      $("#confirm-error").textContent = e.message;
      $("#confirm-error").hidden = false;
      okBtn.disabled = false;
    }
  };
  d.showModal();
}

// ---------- overview ----------
async function viewOverview(view, params) {
  // The period: from the link (#/?minutes=60), else the last one picked, else 6 hours.
  const minutes = Number((params && params.get("minutes")) || store.getItem("ferry.minutes") || 360);
  const o = await api("GET", "/api/overview?minutes=" + minutes);
  overviewCache = o;
  const t = o.totals;
  const lagBad = t.lag_s > 300, lagWarn = t.lag_s > 30;
  const cards = h("div", { class: "cards", id: "cards" },
    card("Pending", fmtNum(t.pending), "waiting for a relay", rowsHref({ state: "pending" }), "", "card-pending"),
    card("In flight", fmtNum(t.sending), "held by a relay", rowsHref({ state: "sending" }), "", "card-sending"),
    card("Retry wait", fmtNum(t.retry_wait), "failed, retrying later", rowsHref({ state: "retry_wait" }), t.retry_wait ? "warn" : "", "card-retry"),
    card("Dead", fmtNum(t.dead), "need an operator", rowsHref({ state: "dead" }), t.dead ? "bad" : "good", "card-dead"),
    card("Delivered, 24 h", fmtNum(t.done_24h), fmtNum(t.done_total) + " all time", rowsHref({ state: "done" }), "good", "card-done"),
    card("Lag", t.lag_s ? dur(t.lag_s) : "none", "oldest due row waits", null, lagBad ? "bad" : lagWarn ? "warn" : "", "card-lag"),
  );

  const wfRows = o.workflows.map((w) => h("tr", { "data-workflow": w.workflow },
    h("td", {}, h("a", { href: rowsHref({ workflow: w.workflow }) }, w.workflow),
      w.document ? null : h("div", { class: "muted" }, "no workflow file here")),
    h("td", {}, w.target || h("span", { class: "muted" }, "—")),
    num(w.pending, rowsHref({ workflow: w.workflow, state: "pending" })),
    num(w.sending, rowsHref({ workflow: w.workflow, state: "sending" })),
    num(w.retry_wait, rowsHref({ workflow: w.workflow, state: "retry_wait" })),
    h("td", { class: "num" + (w.dead ? " error" : ""), "data-col": "dead" }, w.dead ? h("a", { href: rowsHref({ workflow: w.workflow, state: "dead" }), class: "error" }, fmtNum(w.dead)) : h("span", { class: "zero" }, "0")),
    num(w.done_24h, rowsHref({ workflow: w.workflow, state: "done" })),
    h("td", { class: "num", "data-col": "done_total" }, fmtNum(w.done_total)),
    h("td", { class: "num" }, w.lag_s ? dur(w.lag_s) : h("span", { class: "zero" }, "—")),
  ));
  const workflows = h("div", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, "Workflows"), h("span", { class: "muted" }, "rows now in each state; done: delivered")),
    h("table", { id: "workflows" },
      h("thead", {}, h("tr", {}, h("th", {}, "Workflow"), h("th", {}, "Target"), h("th", { class: "num" }, "Pending"), h("th", { class: "num" }, "In flight"),
        h("th", { class: "num" }, "Retry wait"), h("th", { class: "num" }, "Dead"), h("th", { class: "num" }, "Done 24 h"), h("th", { class: "num" }, "Done all time"), h("th", { class: "num" }, "Lag"))),
      h("tbody", {}, wfRows.length ? wfRows : h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No workflows and no rows yet.")))));

  const tRows = o.targets.map((t) => h("tr", { "data-target": t.target },
    h("td", {}, t.target), h("td", {}, t.workflows.join(", ")),
    num(t.pending), num(t.sending), num(t.retry_wait),
    h("td", { class: "num" + (t.dead ? " error" : "") }, t.dead ? fmtNum(t.dead) : h("span", { class: "zero" }, "0")),
    num(t.done_24h),
    h("td", { class: "num" }, t.lag_s ? dur(t.lag_s) : "—"),
    h("td", {}, t.circuit ? h("span", { class: "pill " + t.circuit }, t.circuit.replace("_", "-"))
      : h("span", { class: "pill unknown", title: "Known only when the console is served by the relay (ferry run)" }, "n/a")),
  ));
  const targets = h("div", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, "Targets"), h("span", { class: "muted" }, o.relay ? "circuit state from this relay" : "circuit state needs the relay (ferry run)")),
    h("table", { id: "targets" },
      h("thead", {}, h("tr", {}, h("th", {}, "Target"), h("th", {}, "Workflows"), h("th", { class: "num" }, "Pending"), h("th", { class: "num" }, "In flight"),
        h("th", { class: "num" }, "Retry wait"), h("th", { class: "num" }, "Dead"), h("th", { class: "num" }, "Done 24 h"), h("th", { class: "num" }, "Lag"), h("th", {}, "Circuit"))),
      h("tbody", {}, tRows)));

  const holds = h("div", { class: "panel", id: "holds" },
    h("div", { class: "panel-head" }, h("h2", {}, "Held back"), h("span", { class: "muted" }, "rows waiting for something other than their due time")),
    h("div", { class: "holds" },
      holdCard("Paused (ferry pause)", o.holds.paused_workflows, (v) => v.length ? v.join(", ") : "none"),
      holdCard("Blocked ordering groups", o.holds.blocked_groups, (n) => n ? fmtNum(n) + " (retry or release the dead row)" : "none"),
      holdCard("Held for target login", o.holds.login_held, fmtNum)));

  view.replaceChildren(
    h("div", { class: "panel-head" }, h("h1", {}, "Overview"),
      h("span", { class: "muted right", id: "generated" }, "updated " + fmtTime(o.generated_at) + " · refreshes every 5 s")),
    cards, chart(o, minutes), workflows, targets, holds);
}
function card(label, value, sub, href, cls, id) {
  const body = [h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub)];
  return href ? h("a", { class: "card " + cls, href, id }, body) : h("div", { class: "card " + cls, id }, body);
}
function holdCard(label, value, show) {
  // null: this version does not track it yet (pausing, ordering groups and login holds come later).
  return h("div", { class: "card", "data-hold": label },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value === null || value === undefined ? "not tracked yet" : show(value)));
}

function chart(o, minutes) {
  const W = 1200, H = 170, top = 10, bottom = 22, left = 40;
  const end = Math.floor(new Date(o.generated_at).getTime() / 60000) * 60000;
  const start = end - (minutes - 1) * 60000;
  const byMinute = new Map(o.throughput.map((p) => [new Date(p.minute).getTime(), p]));
  let max = 1;
  for (const p of o.throughput) max = Math.max(max, p.done + p.dead);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const s = (tag, a) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(a)) e.setAttribute(k, v); return e; };
  const plotW = W - left, plotH = H - top - bottom;
  const bw = plotW / minutes;
  svg.append(s("line", { x1: left, y1: top + plotH, x2: W, y2: top + plotH, stroke: "#d0d7de" }));
  svg.append(s("line", { x1: left, y1: top, x2: W, y2: top, stroke: "#eef1f4" }));
  const lbl = (x, y, text, anchor) => { const t = s("text", { x, y, "font-size": 11, fill: "#6a7383", "text-anchor": anchor || "start" }); t.textContent = text; svg.append(t); };
  lbl(left - 6, top + 10, fmtNum(max), "end");
  lbl(left - 6, top + plotH, "0", "end");
  let total = 0;
  for (let i = 0; i < minutes; i++) {
    const t = start + i * 60000;
    const p = byMinute.get(t);
    if (!p) continue;
    total += p.done + p.dead;
    const x = left + i * bw;
    const hd = (p.done / max) * plotH, hx = (p.dead / max) * plotH;
    const g = s("g", {});
    const title = document.createElementNS(ns, "title");
    const d = new Date(t);
    title.textContent = `${pad(d.getHours())}:${pad(d.getMinutes())} · ${p.done} done, ${p.dead} dead`;
    g.append(title);
    if (p.done) g.append(s("rect", { x, y: top + plotH - hd, width: Math.max(bw - 0.5, 0.8), height: hd, fill: "#2da44e" }));
    if (p.dead) g.append(s("rect", { x, y: top + plotH - hd - hx, width: Math.max(bw - 0.5, 0.8), height: hx, fill: "#cf222e" }));
    svg.append(g);
  }
  const ticks = 6;
  for (let k = 0; k <= ticks; k++) {
    const t = start + (k * (minutes - 1) / ticks) * 60000;
    const d = new Date(t);
    lbl(left + (k / ticks) * (plotW - 30), H - 6, `${pad(d.getHours())}:${pad(d.getMinutes())}`);
  }
  const select = h("select", { id: "chart-minutes", onchange: (e) => { store.setItem("ferry.minutes", e.target.value); if (location.hash !== "#/") location.hash = "#/"; else route(); } },
    [[60, "last hour"], [360, "last 6 hours"], [1440, "last 24 hours"]].map(([v, t]) => h("option", { value: v, selected: v === minutes }, t)));
  return h("div", { class: "panel chart", id: "chart" },
    h("div", { class: "panel-head" }, h("h2", {}, "Deliveries per minute"), h("span", { class: "muted" }, fmtNum(total) + " finished in this period"), h("span", { class: "right" }, select)),
    svg,
    h("div", { class: "legend" }, h("span", {}, h("span", { class: "sw sw-done" }), "done"), h("span", {}, h("span", { class: "sw sw-dead" }), "dead")));
}

// ---------- rows ----------
function filterFromHash(params) {
  const f = {};
  for (const k of ["workflow", "state", "q", "from", "to"]) if (params.get(k)) f[k] = params.get(k);
  return f;
}
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
async function viewRows(view, params, show) {
  const filter = filterFromHash(params);
  if (!overviewCache) { try { overviewCache = await api("GET", "/api/overview?minutes=60"); } catch (_) { /* the filter still works */ } }
  const names = overviewCache ? overviewCache.workflows.map((w) => w.workflow) : [];
  if (filter.workflow && !names.includes(filter.workflow)) names.push(filter.workflow);

  const wf = h("select", { id: "f-workflow" }, h("option", { value: "" }, "any workflow"), names.map((n) => h("option", { value: n, selected: n === filter.workflow }, n)));
  const st = h("select", { id: "f-state" }, h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s, selected: s === filter.state }, STATE_LABEL[s])));
  const q = h("input", { id: "f-q", type: "search", value: filter.q || "", placeholder: "key or document code (* = any)" });
  const from = h("input", { id: "f-from", type: "datetime-local", value: toLocalInput(filter.from) });
  const to = h("input", { id: "f-to", type: "datetime-local", value: toLocalInput(filter.to) });
  const apply = (ev) => {
    if (ev) ev.preventDefault();
    const iso = (v) => v ? new Date(v).toISOString() : "";
    location.hash = rowsHref({ workflow: wf.value, state: st.value, q: q.value.trim(), from: iso(from.value), to: iso(to.value) });
  };
  const form = h("form", { class: "filters", id: "filters", onsubmit: apply },
    h("label", {}, "Workflow", wf), h("label", {}, "State", st), h("label", {}, "Search", q),
    h("label", {}, "Created from", from), h("label", {}, "to", to),
    h("button", { type: "submit", class: "primary", id: "f-apply" }, "Filter"),
    h("button", { type: "button", onclick: () => { location.hash = "#/rows"; } }, "Clear"));
  wf.addEventListener("change", apply);
  st.addEventListener("change", apply);

  const tbody = h("tbody", { id: "rows-body" });
  const status = h("span", { class: "muted", id: "rows-status" });
  const moreBtn = h("button", { id: "rows-more", hidden: true }, "Load older rows");
  const table = h("table", { id: "rows" },
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "ID"), h("th", {}, "Workflow"), h("th", {}, "Key"), h("th", {}, "Code"), h("th", {}, "State"),
      h("th", { class: "num" }, "Tries"), h("th", { class: "num" }, "HTTP"), h("th", {}, "Last error"), h("th", {}, "Created"), h("th", {}, "Updated"))),
    tbody);

  view.replaceChildren(
    h("div", { class: "panel-head" }, h("h1", {}, "Rows"), h("span", { class: "muted" }, "newest first")),
    h("div", { class: "panel" }, form, bulkBar(filter)),
    h("div", { class: "panel" }, table, h("div", { class: "more" }, moreBtn, status)));

  let cursor = null, shown = 0, stop = false;
  const load = async () => {
    moreBtn.hidden = true;
    let rounds = 0, found = 0;
    // A search inside payloads looks at a window of rows per call: go on (up to 20 windows)
    // until the page fills, then leave it to the operator.
    for (;;) {
      const p = new URLSearchParams(filter);
      p.set("limit", "50");
      if (cursor) p.set("cursor", cursor);
      status.textContent = rounds ? "searching older rows…" : "loading…";
      const page = await api("GET", "/api/rows?" + p.toString());
      if (stop) return;
      for (const r of page.rows) tbody.append(rowLine(r));
      shown += page.rows.length;
      found += page.rows.length;
      cursor = page.next;
      rounds++;
      if (page.partial && cursor && found < 50 && rounds < 20) {
        status.textContent = "searched rows created after " + fmtTime(page.searched_to) + "…";
        continue;
      }
      if (cursor) {
        moreBtn.hidden = false;
        moreBtn.textContent = page.partial ? "Search older rows" : "Load older rows";
        status.textContent = shown + " shown" + (page.partial ? " · searched rows created after " + fmtTime(page.searched_to) : "");
      } else {
        status.textContent = shown ? shown + " shown · no older rows" : "";
      }
      if (!shown) tbody.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "empty", id: "rows-empty" }, "No rows match.")));
      return;
    }
  };
  moreBtn.addEventListener("click", () => load().catch((e) => toast(e.message, true)));
  window.addEventListener("hashchange", () => { stop = true; }, { once: true });
  if (show) show(view);
  await load();
}
function rowLine(r) {
  const tr = h("tr", { class: "clickable", "data-id": r.id, "data-state": r.state, onclick: () => { location.hash = "#/rows/" + r.id; } },
    h("td", { class: "num" }, h("a", { href: "#/rows/" + r.id }, r.id)),
    h("td", {}, r.workflow), h("td", { class: "mono" }, r.key), h("td", { class: "mono" }, r.code || ""),
    h("td", {}, pill(r.state)), h("td", { class: "num" }, r.attempts), h("td", { class: "num" }, r.last_status || ""),
    h("td", { class: "err", title: r.last_error || "" }, r.last_error || ""),
    h("td", { title: r.created_at }, fmtTime(r.created_at)), h("td", { title: r.updated_at }, ago(r.updated_at)));
  return tr;
}
function bulkBar(filter) {
  const retryable = ["dead", "retry_wait", "sending"].includes(filter.state);
  const cancellable = ["pending", "retry_wait"].includes(filter.state);
  const why = !session || !session.actions_enabled ? "Read-only: no operator token is configured"
    : !unlocked() ? "Unlock actions first (top right)" : "";
  const hint = filter.state ? "" : "Pick a state to act on every matching row.";
  const retryBtn = h("button", { id: "bulk-retry", disabled: !retryable || !!why, title: why || (retryable ? "" : "Retry takes dead, retry wait or in-flight rows") },
    "Retry all matching…");
  const cancelBtn = h("button", { id: "bulk-cancel", class: "danger", disabled: !cancellable || !!why, title: why || (cancellable ? "" : "Cancel takes pending or retry wait rows") },
    "Cancel all matching…");
  retryBtn.addEventListener("click", () => bulk("retry", filter));
  cancelBtn.addEventListener("click", () => bulk("cancel", filter));
  return h("div", { class: "bulkbar" }, retryBtn, cancelBtn, h("span", { class: "muted" }, why || hint));
}
function describeFilter(f) {
  const parts = [];
  if (f.state) parts.push(STATE_LABEL[f.state] + " rows");
  if (f.workflow) parts.push("of " + f.workflow);
  if (f.q) parts.push("matching “" + f.q + "”");
  if (f.from) parts.push("created from " + fmtTime(f.from));
  if (f.to) parts.push("before " + fmtTime(f.to));
  return parts.join(" ");
}
async function bulk(action, filter) {
  let preview;
  try {
    preview = await api("POST", "/api/bulk/preview", { action, filter });
  } catch (e) { toast(e.message, true); return; }
  if (!preview.matched) { toast("No rows match: nothing to " + action); return; }
  const n = preview.matched;
  confirmAction({
    title: (action === "retry" ? "Retry " : "Cancel ") + fmtNum(n) + (n === 1 ? " row" : " rows") + "?",
    body: [
      h("p", {}, "All ", describeFilter(filter), "."),
      h("div", { class: "count", id: "bulk-count" }, fmtNum(n)),
      preview.more ? h("p", { class: "error" }, `More rows match than one action takes (${fmtNum(session.bulk_max)}): the newest are taken; repeat for the rest.`) : null,
      h("p", { class: "muted" }, action === "retry"
        ? "Each becomes pending: due now, with a fresh attempt budget. The history stays."
        : "Each becomes dead with your reason; nothing more is sent for it."),
    ],
    ok: (action === "retry" ? "Retry " : "Cancel ") + fmtNum(n) + (n === 1 ? " row" : " rows"),
    danger: action === "cancel",
    reasonHint: action === "retry" ? "(optional, recorded)" : "(required: it becomes each row's last error)",
    reasonRequired: action === "cancel",
    run: async (reason) => {
      const r = await api("POST", "/api/bulk", { action, filter, expected: n, reason });
      toast(`${r.changed} ${r.changed === 1 ? "row" : "rows"} ${action === "retry" ? "reset to pending" : "cancelled"}` + (r.skipped ? `, ${r.skipped} had moved on` : ""));
      route();
    },
  });
}

// ---------- row detail ----------
function jsonView(value) {
  // Pretty JSON with light colouring; every piece is text.
  const pre = h("pre", { class: "block", id: "payload" });
  const text = JSON.stringify(value, null, 2);
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    if (m[1]) { pre.append(h("span", { class: m[2] ? "k" : "s" }, m[1])); if (m[2]) pre.append(m[2]); }
    else if (m[3]) pre.append(h("span", { class: "b" }, m[3]));
    else pre.append(h("span", { class: "n" }, m[4]));
    last = re.lastIndex;
  }
  pre.append(text.slice(last));
  return pre;
}
async function viewRow(view, id) {
  const v = await api("GET", "/api/rows/" + encodeURIComponent(id));
  const r = v.row;
  const why = !session || !session.actions_enabled ? "Read-only: no operator token is configured" : !unlocked() ? "Unlock actions first (top right)" : "";
  const retryBtn = v.can_retry ? h("button", { id: "row-retry", class: "primary", disabled: !!why, title: why }, "Retry") : null;
  const cancelBtn = v.can_cancel ? h("button", { id: "row-cancel", class: "danger", disabled: !!why, title: why }, "Cancel") : null;
  if (retryBtn) retryBtn.addEventListener("click", () => confirmAction({
    title: `Retry row ${r.id}?`, body: [h("p", {}, `${r.workflow} · ${r.key}: it becomes pending, due now, with a fresh attempt budget.`)],
    ok: "Retry", reasonHint: "(optional, recorded)",
    run: async (reason) => { await api("POST", `/api/rows/${r.id}/retry`, { reason }); toast(`Row ${r.id} reset to pending`); route(); },
  }));
  if (cancelBtn) cancelBtn.addEventListener("click", () => confirmAction({
    title: `Cancel row ${r.id}?`, body: [h("p", {}, `${r.workflow} · ${r.key}: it becomes dead with your reason; nothing more is sent.`)],
    ok: "Cancel row", danger: true, reasonHint: "(required: it becomes the row's last error)", reasonRequired: true,
    run: async (reason) => { await api("POST", `/api/rows/${r.id}/cancel`, { reason }); toast(`Row ${r.id} cancelled`); route(); },
  }));

  const dueLabel = r.state === "sending" ? "Lease until" : "Due";
  const fact = (k, val, title) => h("div", {}, h("div", { class: "k" }, k), h("div", { class: "v", title: title || "" }, val === null || val === undefined || val === "" ? "—" : val));
  const facts = h("div", { class: "facts" },
    fact("Workflow", h("a", { href: rowsHref({ workflow: r.workflow }) }, r.workflow)),
    fact("Target", v.target), fact("Key", h("span", { class: "mono" }, r.key)), fact("Document code", v.code ? h("span", { class: "mono", id: "row-code" }, v.code) : null),
    fact("Attempts (this budget)", String(r.attempts)), fact("Last HTTP status", r.last_status),
    fact("Created", fmtTime(r.created_at), r.created_at), fact("Updated", fmtTime(r.updated_at) + " (" + ago(r.updated_at) + ")", r.updated_at),
    fact(dueLabel, ["done", "dead"].includes(r.state) ? null : fmtTime(r.due_at) + " (" + ago(r.due_at) + ")", r.due_at),
    fact("Done", r.done_at ? fmtTime(r.done_at) : null, r.done_at), fact("Document", v.document));

  const attempts = [...v.attempts].reverse().map((a) => h("li", { class: a.outcome, "data-attempt": a.attempt },
    h("div", { class: "line1" }, h("span", { class: "pill " + a.outcome }, a.outcome), h("strong", {}, "attempt " + a.attempt),
      a.http_status ? h("span", { class: "mono" }, "HTTP " + a.http_status) : h("span", { class: "muted" }, "no HTTP status"),
      h("span", { class: "muted" }, dur(a.duration_ms / 1000)), h("span", { class: "muted", title: a.started_at }, fmtTime(a.started_at))),
    a.error ? h("div", { class: "msg" }, a.error) : null,
    a.response_excerpt ? h("details", {}, h("summary", {}, "response"), h("pre", { class: "block" }, a.response_excerpt)) : null));

  const actions = v.actions.map((a) => h("tr", {},
    h("td", {}, fmtTime(a.at)), h("td", {}, a.action.replace("_", " ")), h("td", {}, a.actor), h("td", {}, a.reason || ""),
    h("td", { class: "muted" }, a.filter ? describeFilter(a.filter) : "this row")));

  view.replaceChildren(
    h("div", { class: "panel", id: "row-detail", "data-state": r.state },
      h("div", { class: "detail-head" }, h("h1", {}, "Row " + r.id), pill(r.state), h("span", { class: "muted" }, r.workflow + (v.code ? " · " + v.code : "")),
        h("div", { class: "actions" }, retryBtn, cancelBtn, h("a", { class: "button", href: rowsHref({ workflow: r.workflow, state: r.state }) }, "Similar rows"))),
      facts,
      r.last_error ? h("div", { class: "reason", id: "row-error" }, h("strong", {}, r.state === "done" ? "Last error before delivery: " : "Last error: "), r.last_error) : null),
    h("div", { class: "two" },
      h("div", { class: "panel" }, h("h2", {}, "Response"), h("p", { class: "muted" }, "what the target answered last (excerpt)"),
        v.response ? h("pre", { class: "block", id: "response" }, v.response) : h("p", { class: "muted", id: "response" }, "No answer recorded.")),
      h("div", { class: "panel" }, h("h2", {}, "Payload"),
        v.payload_hidden ? h("p", { class: "muted", id: "payload" }, "Hidden: this console does not show payloads (FERRY_CONSOLE_HIDE_PAYLOAD).")
          : jsonView(r.payload))),
    h("div", { class: "panel" }, h("h2", {}, `Attempts (${v.attempts.length})`),
      attempts.length ? h("ul", { class: "timeline", id: "attempts" }, attempts) : h("p", { class: "muted", id: "attempts" }, "No attempt yet.")),
    h("div", { class: "panel" }, h("h2", {}, "Operator actions"),
      actions.length ? h("table", { id: "row-actions" }, h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Action"), h("th", {}, "Who"), h("th", {}, "Why"), h("th", {}, "Rows"))), h("tbody", {}, actions))
        : h("p", { class: "muted" }, "None.")));
  // A live row is followed until it settles (a retry: pending, in flight, then done or dead).
  if (["pending", "sending", "retry_wait"].includes(r.state)) {
    const here = location.hash;
    detailTimer = setTimeout(() => {
      if (location.hash === here && !document.querySelector("dialog[open]")) route();
    }, 1500);
  }
}

// ---------- activity ----------
async function viewActivity(view) {
  const list = await api("GET", "/api/actions?limit=100");
  const rows = list.map((a) => h("tr", {},
    h("td", {}, fmtTime(a.at)), h("td", {}, a.action.replace("_", " ")), h("td", {}, a.actor),
    h("td", {}, a.outbox_id ? h("a", { href: "#/rows/" + a.outbox_id }, "row " + a.outbox_id) : describeFilter(a.filter || {})),
    h("td", { class: "num" }, fmtNum(a.changed) + (a.matched !== a.changed ? " of " + fmtNum(a.matched) : "")),
    h("td", {}, a.reason || "")));
  view.replaceChildren(h("div", { class: "panel-head" }, h("h1", {}, "Activity"), h("span", { class: "muted" }, "operator actions, newest first (CLI and console)")),
    h("div", { class: "panel" }, h("table", { id: "activity" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Action"), h("th", {}, "Who"), h("th", {}, "Rows"), h("th", { class: "num" }, "Changed"), h("th", {}, "Why"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No operator action yet."))))));
}

// ---------- routing ----------
// Each navigation draws into a detached element and shows it only if no later navigation began
// meanwhile: a slow answer for a page the operator has left never replaces the current one.
let routeSeq = 0;
async function route() {
  const seq = ++routeSeq;
  clearInterval(overviewTimer);
  clearTimeout(detailTimer);
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const view = $("#view");
  const current = () => seq === routeSeq;
  // (A page that showed itself early, the rows, is empty by then and left alone.)
  const show = (page) => { if (current() && page.childNodes.length) view.replaceChildren(...page.childNodes); };
  const section = path.startsWith("/rows") ? "rows" : path.startsWith("/activity") ? "activity" : "overview";
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === section);
  drawSession();
  const page = document.createElement("div");
  try {
    const m = path.match(/^\/rows\/(\d+)$/);
    if (m) { document.title = `Row ${m[1]} · Ferry`; await viewRow(page, m[1]); }
    else if (section === "rows") { document.title = "Rows · Ferry"; await viewRows(page, params, show); }
    else if (section === "activity") { document.title = "Activity · Ferry"; await viewActivity(page); }
    else {
      document.title = "Ferry console";
      await viewOverview(page, params);
      if (current()) {
        overviewTimer = setInterval(() => {
          if (!current() || document.querySelector("dialog[open]")) return;
          const next = document.createElement("div");
          viewOverview(next, params).then(() => show(next)).catch(() => {});
        }, 5000);
      }
    }
    show(page);
  } catch (e) {
    page.replaceChildren(h("div", { class: "panel" }, h("h1", {}, "Something went wrong"), h("p", { class: "error", id: "view-error" }, e.message)));
    show(page);
  }
}

async function start() {
  $("#lock").addEventListener("click", () => {
    if (unlocked()) { store.removeItem("ferry.token"); drawSession(); toast("Actions locked"); route(); }
    else openUnlock();
  });
  $("#unlock-form").addEventListener("submit", submitUnlock);
  $("#unlock-cancel").addEventListener("click", () => $("#unlock-dialog").close());
  $("#confirm-cancel").addEventListener("click", () => $("#confirm-dialog").close());
  try { session = await api("GET", "/api/session"); } catch (e) { session = null; toast(e.message, true); }
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}
start();
