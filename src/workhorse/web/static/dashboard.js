// The workhorse dashboard: fills the server's page shells from the JSON API under /api.
// Plain browser JavaScript, no build step and nothing from a CDN. Every value from the store
// goes into the page as text (textContent), never as HTML.
"use strict";

(() => {
  const body = document.body;
  const BASE = body.dataset.base || "";
  const PAGE = body.dataset.page || "";
  const REFRESH = Math.max(1, parseFloat(body.dataset.refresh || "3")) * 1000;
  const SVG = "http://www.w3.org/2000/svg";

  // -- small helpers --------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    for (const child of children) {
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  async function api(path, options = {}) {
    const response = await fetch(BASE + "/api" + path, {
      credentials: "same-origin",
      headers: { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
      ...options,
    });
    if (response.status === 401) {
      window.location.href = BASE + "/login?next=" + encodeURIComponent(location.pathname.slice(BASE.length) || "/");
      throw new Error("authentication required");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.status + " " + response.statusText);
    return data;
  }

  function post(path, body) {
    return api(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });
  }

  function flash(text, kind = "ok") {
    const box = document.getElementById("flash");
    if (!box) return;
    box.replaceChildren(h("div", { class: "flash " + kind }, text));
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => box.replaceChildren(), 5000);
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  function clock(t) {
    if (t === null || t === undefined) return "—";
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function span(seconds) {
    const a = Math.abs(seconds);
    if (a < 1) return `${Math.round(a * 1000)}ms`;
    if (a < 60) return `${a < 10 ? a.toFixed(1) : Math.round(a)}s`;
    if (a < 3600) return `${Math.floor(a / 60)}m ${Math.round(a % 60)}s`;
    if (a < 86400) return `${Math.floor(a / 3600)}h ${Math.round((a % 3600) / 60)}m`;
    return `${Math.floor(a / 86400)}d ${Math.round((a % 86400) / 3600)}h`;
  }

  // A time as "3m 4s ago" or "in 20s", with the exact local time as a tooltip.
  function when(t, now) {
    if (t === null || t === undefined) return h("span", {}, "—");
    const delta = t - (now || Date.now() / 1000);
    const text = Math.abs(delta) < 1 ? "now" : delta < 0 ? `${span(delta)} ago` : `in ${span(delta)}`;
    return h("time", { datetime: new Date(t * 1000).toISOString(), title: clock(t) }, text);
  }

  function jobLink(id) {
    return h("a", { class: "id", href: `${BASE}/jobs/${encodeURIComponent(id)}`, title: id }, id);
  }

  function stateTag(state) { return h("span", { class: `state ${state}` }, state); }

  function pretty(value) { return value === undefined ? "" : JSON.stringify(value, null, 2); }

  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren(...(rows.length ? rows
      : [h("tr", { class: "empty" }, h("td", { colspan: columns }, empty))]));
  }

  // Run `render` now and every REFRESH ms while the tab is visible; say when it last worked.
  function poll(render) {
    const updated = document.getElementById("updated");
    let timer = null;
    let latest = 0;
    async function tick() {
      clearTimeout(timer);
      const mine = ++latest;  // an action may call tick() while a poll is in flight
      try {
        await Promise.all([render(), badges()]);
        if (updated) updated.textContent = `updated ${clock(Date.now() / 1000)}`;
        body.dataset.loaded = "true";
      } catch (err) {
        if (updated) updated.textContent = `update failed: ${err.message}`;
      }
      if (mine === latest && !document.hidden) timer = setTimeout(tick, REFRESH);
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
    tick();
    return tick;
  }

  async function badges() {
    const stats = await api("/stats");
    for (const el of document.querySelectorAll("[data-count]")) {
      const n = stats.counts[el.dataset.count];
      el.textContent = n ? String(n) : "";
    }
    return stats;
  }

  async function act(promise, success) {
    try {
      const result = await promise;
      flash(typeof success === "function" ? success(result) : success);
      return result;
    } catch (err) {
      flash(err.message, "error");
      return null;
    }
  }

  // -- charts ---------------------------------------------------------------------------------

  // Per-minute buckets over the last hour: a sum of `key` (or the max, for levels).
  function buckets(metrics, key, reduce) {
    const minutes = Math.round(metrics.window / 60);
    const start = metrics.now - metrics.window;
    const out = new Array(minutes).fill(null);
    for (const p of metrics.points) {
      const v = p[key];
      if (v === null || v === undefined) continue;
      const i = Math.min(minutes - 1, Math.floor((p.t - start) / 60));
      if (i < 0) continue;
      out[i] = out[i] === null ? v : reduce(out[i], v);
    }
    return out;
  }

  // The top of a chart's scale: a round number at or above v; for counts, one that splits
  // into four whole steps.
  function niceMax(v, whole) {
    if (whole) return v <= 4 ? 4 : Math.ceil(niceMax(v, false) / 4) * 4;
    if (v <= 0) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * step) return m * step;
    return 10 * step;
  }

  // An SVG chart of 60 one-minute values: bars, or a line for a level (gaps where unknown).
  function chart(container, values, { kind = "bar", color = "#2f6fdf", unit = "" } = {}) {
    const W = 600, H = 170, L = 52, R = 8, T = 10, B = 22;
    const max = niceMax(Math.max(0, ...values.filter((v) => v !== null)), unit !== "s");
    const x = (i) => L + (i * (W - L - R)) / values.length;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: kind });
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      const label = v === 0 ? "0" : unit === "s" ? span(v) : String(v);
      svg.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, label));
    }
    for (const m of [60, 45, 30, 15, 0]) {
      const i = values.length - m;
      svg.append(s("text", { x: x(i), y: H - 6, "text-anchor": m === 0 ? "end" : m === 60 ? "start" : "middle" },
        m === 0 ? "now" : `-${m}m`));
    }
    const bw = (W - L - R) / values.length;
    if (kind === "bar") {
      values.forEach((v, i) => {
        if (!v) return;
        const minutesAgo = values.length - i;
        svg.append(s("rect", { x: x(i) + 0.5, y: y(v), width: Math.max(1, bw - 1), height: y(0) - y(v), fill: color },
          s("title", {}, `${v} · ${minutesAgo}m ago`)));
      });
    } else {
      let d = "", pen = false;
      values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${(x(i) + bw / 2).toFixed(1)},${y(v).toFixed(1)} `;
        pen = true;
      });
      svg.append(s("path", { d: d.trim() || "M0,0", stroke: color, fill: "none", "stroke-width": 2 }));
      values.forEach((v, i) => {
        if (v === null) return;
        svg.append(s("circle", { cx: x(i) + bw / 2, cy: y(v), r: 2.2, fill: color },
          s("title", {}, `${span(v)} · ${values.length - i}m ago`)));
      });
    }
    const total = values.reduce((a, v) => a + (v || 0), 0);
    container.dataset.total = String(total);
    container.replaceChildren(svg);
  }

  // -- pages ----------------------------------------------------------------------------------

  const COUNT_CARDS = ["ready", "running", "scheduled", "retrying", "dead", "succeeded", "cancelled"];

  function overview() {
    const cards = document.getElementById("cards");
    const tbody = document.querySelector("#queues tbody");
    const tick = poll(async () => {
      const [stats, queues, metrics] = await Promise.all([api("/stats"), api("/queues"), api("/metrics?step=60")]);
      const card = (label, value, href, cls) =>
        h(href ? "a" : "div", { class: `card ${cls || ""}`, href, dataset: { card: label.toLowerCase() } },
          h("span", { class: "value" }, value), h("span", { class: "label" }, label));
      cards.replaceChildren(
        ...COUNT_CARDS.map((k) => card(k[0].toUpperCase() + k.slice(1), stats.counts[k] || 0,
          ["scheduled", "retrying", "dead"].includes(k) ? `${BASE}/${k}` : `${BASE}/jobs?state=${k}`, k)),
        card("Workers", stats.workers, `${BASE}/workers`),
        card("Busy", stats.busy, `${BASE}/workers`),
      );
      fill(tbody, queues.map((q) => {
        const c = (k) => h("td", { class: "n" }, q.counts[k] || 0);
        const button = q.paused
          ? h("button", { type: "button", onclick: () => toggle(q.name, false) }, "Resume")
          : h("button", { type: "button", onclick: () => toggle(q.name, true) }, "Pause");
        return h("tr", { dataset: { queue: q.name }, class: q.paused ? "paused" : "" },
          h("td", {}, h("a", { href: `${BASE}/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
          c("ready"), c("running"), c("scheduled"), c("retrying"), c("dead"), c("succeeded"),
          h("td", { class: "n" }, span(q.latency)),
          h("td", {}, h("span", { class: `tag ${q.paused ? "paused" : "active"}` }, q.paused ? "paused" : "active")),
          h("td", { class: "actions" }, button));
      }), "No queues yet: enqueue a job.", 10);
      chart(document.getElementById("chart-throughput"), buckets(metrics, "succeeded", (a, b) => a + b), { color: "#2b8a3e" });
      chart(document.getElementById("chart-failures"), buckets(metrics, "failed", (a, b) => a + b), { color: "#c92a2a" });
      chart(document.getElementById("chart-latency"), buckets(metrics, "latency", Math.max), { kind: "line", color: "#2f6fdf", unit: "s" });
    });
    async function toggle(queue, pause) {
      const name = encodeURIComponent(queue);
      await act(post(`/queues/${name}/${pause ? "pause" : "resume"}`), `${queue} ${pause ? "paused" : "resumed"}`);
      tick();
    }
  }

  function workers() {
    const wbody = document.querySelector("#workers tbody");
    const bbody = document.querySelector("#busy tbody");
    poll(async () => {
      const [w, b] = await Promise.all([api("/workers"), api("/busy")]);
      const busyBy = {};
      for (const job of b.jobs) busyBy[job.lease_owner] = (busyBy[job.lease_owner] || 0) + 1;
      fill(wbody, w.workers.map((wk) => h("tr", { dataset: { worker: wk.id }, class: w.now - wk.last_beat > 60 ? "stale" : "" },
        h("td", { class: "mono" }, wk.id), h("td", {}, wk.host), h("td", { class: "n" }, wk.pid),
        h("td", {}, wk.queues.join(", ")),
        h("td", { class: "n" }, `${busyBy[wk.id] || 0} / ${wk.concurrency}`),
        h("td", {}, when(wk.started_at, w.now)), h("td", {}, when(wk.last_beat, w.now)))),
      "No workers are beating. Start one: workhorse worker module:app", 7);
      fill(bbody, b.jobs.map((job) => h("tr", { dataset: { id: job.id } },
        h("td", {}, jobLink(job.id)), h("td", {}, job.name), h("td", {}, job.queue),
        h("td", { class: "mono" }, job.lease_owner || "—"), h("td", {}, when(job.started_at, b.now)),
        h("td", {}, job.checkin ? [h("span", { class: "checkin" }, job.checkin), " ", when(job.checkin_at, b.now)] : "—"))),
      "Nothing is running.", 6);
    });
  }

  const CAN = {
    retry: ["retrying", "dead", "cancelled"],
    requeue: ["scheduled", "retrying"],
    delete: ["scheduled", "ready", "retrying", "succeeded", "dead", "cancelled"],
  };
  const VERB = { retry: "Retry", requeue: "Run now", delete: "Delete" };

  function jobs() {
    const params = new URLSearchParams(location.search);
    const fixed = body.dataset.state && PAGE !== "jobs";
    const form = document.getElementById("filters");
    const tbody = document.querySelector("#jobs tbody");
    const pager = document.getElementById("pager");
    const selectAll = document.getElementById("select-all");
    const selected = new Set();
    let offset = parseInt(params.get("offset") || "0", 10) || 0;
    const limit = 50;
    for (const key of ["state", "queue", "name"]) {
      if (form.elements[key] && params.get(key)) form.elements[key].value = params.get(key);
    }
    const filters = () => {
      const f = { state: fixed ? body.dataset.state : (form.elements.state ? form.elements.state.value : "") };
      for (const key of ["queue", "name"]) f[key] = form.elements[key].value.trim();
      return f;
    };
    const query = (extra) => {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries({ ...filters(), ...extra })) if (v !== "" && v !== undefined) q.set(k, v);
      return q.toString();
    };
    function syncToolbar() {
      document.getElementById("selected").textContent = String(selected.size);
      const state = filters().state;
      for (const b of document.querySelectorAll("[data-bulk]")) {
        b.disabled = selected.size === 0;
        b.hidden = state !== "" && !CAN[b.dataset.bulk].includes(state);
      }
      for (const b of document.querySelectorAll("[data-all]")) b.hidden = !CAN[b.dataset.all].includes(state);
    }
    function row(job, now) {
      const box = h("input", { type: "checkbox", "aria-label": `Select ${job.id}`, checked: selected.has(job.id),
        onchange: (e) => { if (e.target.checked) selected.add(job.id); else selected.delete(job.id); syncToolbar(); } });
      const t = ["scheduled", "retrying"].includes(job.state) ? job.run_at
        : job.state === "running" ? job.started_at : job.finished_at || job.enqueued_at;
      const buttons = Object.keys(CAN).filter((a) => CAN[a].includes(job.state)).map((a) =>
        h("button", { type: "button", class: a === "delete" ? "danger" : "", onclick: () => one(job.id, a) }, VERB[a]));
      return h("tr", { dataset: { id: job.id, state: job.state } },
        h("td", {}, box), h("td", {}, jobLink(job.id)), h("td", {}, job.name), h("td", {}, job.queue),
        h("td", {}, stateTag(job.state)), h("td", { class: "n" }, job.attempt), h("td", {}, when(t, now)),
        h("td", { class: "error" }, job.error ? `${job.status || ""} ${job.error}`.trim() : job.args_error || ""),
        h("td", { class: "actions" }, buttons));
    }
    const tick = poll(async () => {
      const page = await api(`/jobs?${query({ limit, offset })}`);
      if (page.items.length === 0 && offset > 0 && page.total > 0) {
        offset = Math.max(0, Math.floor((page.total - 1) / limit) * limit);
        return tick();
      }
      const now = Date.now() / 1000;
      fill(tbody, page.items.map((j) => row(j, now)), "No jobs here.", 9);
      selectAll.checked = page.items.length > 0 && page.items.every((j) => selected.has(j.id));
      const first = page.total ? offset + 1 : 0;
      pager.replaceChildren(
        h("button", { type: "button", disabled: offset === 0, onclick: () => go(offset - limit) }, "‹ Previous"),
        h("span", {}, `${first}–${offset + page.items.length} of ${page.total}`),
        h("button", { type: "button", disabled: offset + limit >= page.total, onclick: () => go(offset + limit) }, "Next ›"));
      syncToolbar();
    });
    function go(to) {
      offset = Math.max(0, to);
      history.replaceState(null, "", `${location.pathname}?${query({ offset: offset || "" })}`);
      tick();
    }
    async function one(id, action) {
      if (action === "delete" && !confirm(`Delete job ${id}?`)) return;
      const path = `/jobs/${encodeURIComponent(id)}/${action}`;
      if (await act(post(path), `${VERB[action]}: ${id}`)) selected.delete(id);
      tick();
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); selected.clear(); go(0); });
    selectAll.addEventListener("change", () => {
      for (const box of tbody.querySelectorAll("tr[data-id]")) {
        if (selectAll.checked) selected.add(box.dataset.id); else selected.delete(box.dataset.id);
      }
      tick();
    });
    for (const b of document.querySelectorAll("[data-bulk]")) {
      b.addEventListener("click", async () => {
        const action = b.dataset.bulk;
        const ids = [...selected];
        if (action === "delete" && !confirm(`Delete ${ids.length} jobs?`)) return;
        const r = await act(post("/jobs/bulk", { action, ids }),
          (res) => `${VERB[action]}: ${res.done.length} done` + (res.skipped.length ? `, ${res.skipped.length} skipped` : ""));
        if (r) selected.clear();
        tick();
      });
    }
    for (const b of document.querySelectorAll("[data-all]")) {
      b.addEventListener("click", async () => {
        const action = b.dataset.all;
        const f = filters();
        const scope = [f.queue && `queue ${f.queue}`, f.name && `handler ${f.name}`].filter(Boolean).join(", ");
        const ask = { retry: "Retry", requeue: "Run now", delete: "Delete" }[action];
        if (!confirm(`${ask} every ${f.state} job${scope ? ` of ${scope}` : ""}?`)) return;
        const done = { retry: "Retried", requeue: "Made due", delete: "Deleted" }[action];
        await act(post(`/jobs/${action}-all?${query({})}`), (r) => `${done}: ${r.count} jobs`);
        selected.clear();
        tick();
      });
    }
  }

  function jobPage() {
    const id = body.dataset.job;
    const facts = document.getElementById("facts");
    if (!facts) return;  // the server found no such job
    let state = null;
    const tick = poll(async () => {
      let job;
      try {
        job = await api(`/jobs/${encodeURIComponent(id)}`);
      } catch (err) {
        facts.replaceChildren(h("dt", {}, "Gone"), h("dd", {}, err.message));
        state = null;
        return;
      }
      state = job.state;
      const now = Date.now() / 1000;
      const took = job.started_at && job.finished_at ? span(job.finished_at - job.started_at) : "—";
      const rows = [
        ["Name", job.name], ["Queue", h("a", { href: `${BASE}/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)],
        ["State", stateTag(job.state)], ["Status", job.status ?? "—"], ["Attempt", job.attempt],
        ["Priority", job.priority], ["Enqueued", when(job.enqueued_at, now)], ["Run at", when(job.run_at, now)],
        ["Started", when(job.started_at, now)], ["Finished", when(job.finished_at, now)], ["Took", took],
        ["Worker", job.lease_owner || "—"], ["Lease until", when(job.lease_expires_at, now)],
        ["Check-in", job.checkin ? [job.checkin, " ", when(job.checkin_at, now)] : "—"],
        ["Unique key", job.unique_key || "—"], ["Idempotency key", job.idempotency_key || "—"],
      ];
      if (job.error) rows.push(["Error", h("span", { class: "error" }, job.error)]);
      facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k.toLowerCase() } }, v)]));
      document.getElementById("args").textContent = job.args_error ? `undecodable: ${job.args_error}` : pretty(job.args);
      document.getElementById("result").textContent = job.result === null ? "—" : pretty(job.result);
      document.getElementById("headers").textContent = pretty(job.headers);
      const attempts = job.attempts.length ? job.attempts : [];
      fill(document.querySelector("#attempts tbody"), attempts.slice().reverse().map((a) => h("tr", {},
        h("td", { class: "n" }, a.attempt), h("td", {}, a.status ?? "—"), h("td", {}, when(a.started_at, now)),
        h("td", {}, a.started_at && a.finished_at ? span(a.finished_at - a.started_at) : "—"),
        h("td", { class: "error" }, a.error || "", a.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", {}, a.traceback)) : null))),
      "No attempt has finished yet.", 5);
      for (const b of document.querySelectorAll("[data-act]")) b.disabled = !CAN[b.dataset.act].includes(job.state);
    });
    for (const b of document.querySelectorAll("[data-act]")) {
      b.addEventListener("click", async () => {
        const action = b.dataset.act;
        if (action === "delete" && !confirm(`Delete job ${id}?`)) return;
        const before = state;
        const r = await act(post(`/jobs/${encodeURIComponent(id)}/${action}`), `${VERB[action]}: done`);
        if (r && action === "delete") {
          window.location.href = ["scheduled", "retrying", "dead"].includes(before) ? `${BASE}/${before}` : `${BASE}/jobs`;
          return;
        }
        tick();
      });
    }
  }

  const PAGES = { overview, workers, jobs, scheduled: jobs, retrying: jobs, dead: jobs, job: jobPage };
  if (PAGES[PAGE]) PAGES[PAGE]();
  else if (PAGE) poll(async () => {});
})();
