/* enova's /instance page: every deployment (/instance) or one (/instance/NAME), kept current by
 * polling the app server's API every few seconds while the tab is visible.
 *
 * Data: GET /api/v1/deployments[/NAME] (status), /api/v1/deployments/NAME/series (charts,
 * attainment, scale marks, source), /api/v1/events?deployment=NAME, /api/v1/runs. Starting a run:
 * POST /api/v1/runs with the token typed into the form, kept in this tab's sessionStorage only. */
(function () {
  "use strict";
  const TOKEN_KEY = "enova.app.token";
  const STATUS_EVERY = 5000, EVENTS_EVERY = 5000, RUNS_EVERY = 3000, RUNS_IDLE_EVERY = 15000;
  const $ = (sel) => document.querySelector(sel);
  const path = decodeURIComponent(location.pathname.replace(/\/+$/, ""));
  const name = path.startsWith("/instance/") ? path.slice("/instance/".length) : "";
  const state = {series: null, runsActive: false, reportNeedsToken: false};

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  async function api(url, options) {
    const opts = Object.assign({headers: {}}, options || {});
    opts.headers = Object.assign({Accept: "application/json"}, opts.headers);
    if (token()) opts.headers.Authorization = "Bearer " + token();
    const resp = await fetch(url, opts);
    let body = null;
    const text = await resp.text();
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = {detail: text}; }
    if (!resp.ok) {
      const detail = body && body.detail !== undefined ? body.detail : resp.statusText;
      const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function showError(message) {
    const box = $("#error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function failed(e) {
    if (e.status === 401) {
      state.reportNeedsToken = true;
      showError("This app server needs its token to show anything: type it in the token field above " +
                "(`enova app token` prints it; it is kept in this tab only).");
    } else {
      showError(e.message);
    }
  }

  function keepToken() {
    const field = $("#token");
    const typed = field.value.trim();
    if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    field.value = "";
    field.placeholder = token() ? "token kept for this tab" : "enova app token";
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function badge(text) {
    const span = document.createElement("span");
    span.className = "badge " + String(text).replace(/[^A-Za-z]/g, "");
    span.textContent = text;
    return span;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function uptime(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  function stamp(t) { return new Date(t * 1000).toLocaleTimeString(); }

  function every(ms, fn) {
    const run = async () => {
      if (!document.hidden) {
        try { await fn(); } catch (e) { failed(e); }
      }
      setTimeout(run, typeof ms === "function" ? ms() : ms);
    };
    run();
  }

  // ---- the deployment picker and the index -------------------------------------------------------

  async function loadDeployments() {
    const body = await api("/api/v1/deployments");
    const deployments = body.deployments || [];
    const picker = $("#picker");
    const wanted = ["", ...deployments.map((d) => d.name)];
    if ([...picker.options].map((o) => o.value).join() !== wanted.join()) {
      picker.replaceChildren(...wanted.map((n) => {
        const o = document.createElement("option");
        o.value = n;
        o.textContent = n || "all deployments";
        return o;
      }));
    }
    picker.value = name;
    if (!name) renderIndex(deployments);
    showError("");
  }

  function renderIndex(deployments) {
    const tbody = $("#deployments tbody");
    tbody.replaceChildren(...deployments.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.deployment = d.name;
      cell(tr, link("/instance/" + encodeURIComponent(d.name), d.name));
      cell(tr, badge(d.sync.status));
      cell(tr, badge(d.health.status));
      cell(tr, `${d.replicas.running}/${d.replicas.desired === null ? "?" : d.replicas.desired}`, "num");
      cell(tr, d.health.reason || d.sync.reason);
      return tr;
    }));
    $("#no-deployments").hidden = deployments.length > 0;
  }

  // ---- one deployment ----------------------------------------------------------------------------

  async function loadDeployment() {
    const d = await api("/api/v1/deployments/" + encodeURIComponent(name));
    $("#title").textContent = d.name;
    const summary = $("#summary");
    summary.replaceChildren(
      document.createTextNode("sync "), badge(d.sync.status), document.createTextNode(` ${d.sync.reason}; health `),
      badge(d.health.status), document.createTextNode(` ${d.health.reason}; replicas ${d.replicas.running}/` +
        `${d.replicas.desired === null ? "?" : d.replicas.desired}` +
        (d.spec ? `; model ${d.spec.model}` + (d.spec.slo ? `; SLO ${typeof d.spec.slo === "string" ? d.spec.slo : JSON.stringify(d.spec.slo)}` : "") : "")));
    summary.dataset.health = d.health.status;
    const tbody = $("#replicas tbody");
    tbody.replaceChildren(...d.replica_details.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.replica = r.id;
      tr.dataset.health = r.health;
      cell(tr, r.id);
      cell(tr, r.where);
      cell(tr, r.port, "num");
      cell(tr, badge(r.health));
      cell(tr, uptime(r.uptime_seconds), "num");
      cell(tr, r.config_hash);
      cell(tr, r.detail);
      return tr;
    }));
    showError("");
  }

  async function loadSeries() {
    const win = Number($("#window").value);
    const s = await api(`/api/v1/deployments/${encodeURIComponent(name)}/series?window=${win}`);
    state.series = s;
    const source = $("#source");
    source.dataset.source = s.source;
    source.className = "banner " + s.source;
    if (s.source === "prometheus") {
      source.textContent = `Series from Prometheus (${s.prometheus}), step ${s.step} s.` +
        (s.errors && s.errors.length ? " Some queries failed: " + s.errors.join("; ") : "");
    } else {
      source.textContent = (s.reason ? s.reason + ". " : "") + s.hint;
    }
    renderProfiles(s.profiles || []);
    renderAttainment(s);
    renderCharts(s, win);
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function renderAttainment(s) {
    const box = $("#attainment");
    const cards = [];
    if (s.source !== "prometheus") {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "SLO attainment comes from Prometheus's SLO recording rules: `enova mon start` to see it.";
      cards.push(p);
    } else if (!s.slo || !s.attainment.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = s.slo ? `SLO ${s.slo.name}: its objectives are not known (the specs are not readable here).`
        : "This deployment has no SLO (spec.slo).";
      cards.push(p);
    }
    for (const a of s.source === "prometheus" ? s.attainment : []) {
      const card = document.createElement("div");
      const met = a.value === null || a.level === null ? "" : a.value >= a.level ? "met" : "missed";
      card.className = "card " + met;
      card.dataset.objective = a.objective;
      const title = document.createElement("div");
      title.textContent = a.objective;
      const value = document.createElement("div");
      value.className = "value";
      value.textContent = a.value === null ? "no data yet" : (a.value * 100).toFixed(2) + "%";
      const level = document.createElement("div");
      level.className = "muted";
      level.textContent = a.level === null ? "" : `objective ${(a.level * 100).toFixed(2)}%` +
        (a.value === null ? " (recorded every minute once requests are seen)" : "");
      card.append(title, value, level);
      cards.push(card);
    }
    box.replaceChildren(...cards);
  }

  function renderCharts(s, win) {
    const box = $("#charts");
    const end = s.now;
    let start = end - win;
    if (s.source === "live") {
      // live values exist since the app server began sampling: show that span (at least 5 minutes)
      let first = end;
      for (const c of s.charts) for (const x of c.series) if (x.points.length && x.points[0][0] < first) first = x.points[0][0];
      start = Math.max(end - win, Math.min(first, end - 300));
    }
    const eventMarks = (s.scale_events || []).map((e) => ({time: e.time, label: `${e.reason}: ${e.message}`, kind: "event"}));
    const changeMarks = (s.replica_changes || []).map((t) => ({time: t, label: "the number of replicas changed", kind: "change"}));
    const step = s.step || 2;
    for (const chart of s.charts) {
      let figure = document.getElementById("chart-" + chart.id);
      if (!figure) {
        figure = document.createElement("figure");
        figure.className = "chart";
        figure.id = "chart-" + chart.id;
        figure.dataset.chart = chart.id;
        box.appendChild(figure);
      }
      const empty = chart.id === "gpu" ? "no GPU series (no GPU, or no exporter)" :
        s.source === "live" ? "waiting for a second sample of the live values" : "no data in this window";
      window.EnovaCharts.draw(figure, chart, {
        start, end, gap: Math.max(3 * step, 15),
        marks: chart.id === "replicas" ? [...changeMarks, ...eventMarks] : eventMarks,
        empty,
      });
    }
  }

  async function loadEvents() {
    const body = await api(`/api/v1/events?deployment=${encodeURIComponent(name)}&limit=50`);
    const events = (body.events || []).slice().reverse();
    $("#events tbody").replaceChildren(...events.map((e) => {
      const tr = document.createElement("tr");
      cell(tr, stamp(e.time));
      cell(tr, badge(e.type));
      cell(tr, e.reason);
      cell(tr, e.message);
      return tr;
    }));
    if (!events.length) {
      const tr = document.createElement("tr");
      cell(tr, "No event yet: the reconciler (`enova reconcile SPECS`) records what it does here.").colSpan = 4;
      $("#events tbody").appendChild(tr);
    }
  }

  // ---- injection runs ----------------------------------------------------------------------------

  function renderProfiles(profiles) {
    const select = $("#run-profile");
    if ([...select.options].map((o) => o.value).join() === profiles.join() && select.options.length) return;
    select.replaceChildren(...profiles.map((p) => {
      const o = document.createElement("option");
      o.value = p;
      o.textContent = p;
      return o;
    }));
    if (!profiles.length) {
      const o = document.createElement("option");
      o.value = "";
      o.textContent = "(no LoadProfile targets this deployment)";
      select.appendChild(o);
    }
  }

  function describeRun(r) {
    if (r.kind === "profile") return "profile " + r.profile;
    const q = r.request || {};
    return `quick ${q.rate} req/s for ${q.duration}, ${q.output_len} tokens`;
  }

  function summarise(r) {
    if (r.state === "running" || r.state === "starting") {
      const p = r.progress || {};
      return `${Math.round((p.fraction || 0) * 100)}%` + (p.sent !== null && p.sent !== undefined ? `, ${p.sent} sent` : "");
    }
    const s = r.summary || {};
    const parts = [];
    for (const key of ["requests", "ok", "failed", "throughput_rps", "ttft_p95_ms", "e2e_p99_ms"]) {
      if (s[key] !== undefined && s[key] !== null && typeof s[key] !== "object") parts.push(`${key} ${s[key]}`);
    }
    if (r.slo_met !== null && r.slo_met !== undefined) parts.push(r.slo_met ? "SLO met" : "SLO missed");
    return parts.join(", ") || r.message || "";
  }

  async function openReport(event) {
    if (!state.reportNeedsToken) return;  // a plain link works
    event.preventDefault();
    const resp = await fetch(event.target.href, {headers: {Authorization: "Bearer " + token()}});
    const blob = new Blob([await resp.text()], {type: "text/html"});
    window.open(URL.createObjectURL(blob), "_blank", "noopener");
  }

  async function loadRuns() {
    const body = await api("/api/v1/runs");
    const runs = (body.runs || []).filter((r) => r.deployment === name);
    state.runsActive = runs.some((r) => ["starting", "running", "cancelling"].includes(r.state));
    $("#runs tbody").replaceChildren(...runs.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.run = r.id;
      tr.dataset.state = r.state;
      cell(tr, r.id);
      cell(tr, badge(r.state));
      cell(tr, stamp(r.created_at));
      cell(tr, describeRun(r));
      cell(tr, summarise(r));
      if (r.report_url) {
        const a = link(r.report_url, "report");
        a.target = "_blank";
        a.rel = "noopener";
        a.className = "report";
        a.addEventListener("click", openReport);
        cell(tr, a);
      } else {
        cell(tr, "");
      }
      return tr;
    }));
  }

  async function startRun(event) {
    event.preventDefault();
    const message = $("#run-message");
    keepToken();
    const mode = document.querySelector("input[name=mode]:checked").value;
    const body = mode === "profile"
      ? {profile: $("#run-profile").value, deployment: name}
      : {deployment: name, rate: Number($("#run-rate").value), duration: $("#run-duration").value.trim(),
         output_len: Number($("#run-output-len").value)};
    if (mode === "profile" && !body.profile) {
      message.className = "bad";
      message.textContent = "no LoadProfile to run: choose quick, or add a LoadProfile with target " + name;
      return;
    }
    message.className = "";
    message.textContent = "starting…";
    try {
      const run = await api("/api/v1/runs", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)});
      message.textContent = `run ${run.id} started`;
      state.runsActive = true;
      await loadRuns();
    } catch (e) {
      message.className = "bad";
      message.textContent = (e.status === 401 || e.status === 403 ? "token missing or refused (type it in the token field above): " : "") + e.message;
      if (e.status === 401 || e.status === 403) sessionStorage.removeItem(TOKEN_KEY);
    }
  }

  // ---- start -------------------------------------------------------------------------------------

  function start() {
    if (token()) $("#token").placeholder = "token kept for this tab";
    $("#token").addEventListener("change", keepToken);
    $("#picker").addEventListener("change", (e) => {
      location.href = e.target.value ? "/instance/" + encodeURIComponent(e.target.value) : "/instance";
    });
    if (!name) {
      $("#index").hidden = false;
      every(STATUS_EVERY, loadDeployments);
      return;
    }
    document.title = "enova: " + name;
    $("#instance").hidden = false;
    $("#window-picker").hidden = false;
    $("#run-form").addEventListener("submit", startRun);
    $("#window").addEventListener("change", () => loadSeries().catch(failed));
    loadDeployments().catch(failed);
    every(STATUS_EVERY, loadDeployment);
    every(() => (state.series ? state.series.refresh_seconds * 1000 : 5000), loadSeries);
    every(EVENTS_EVERY, loadEvents);
    every(() => (state.runsActive ? RUNS_EVERY : RUNS_IDLE_EVERY), loadRuns);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) loadSeries().catch(failed);
    });
  }

  start();
})();
