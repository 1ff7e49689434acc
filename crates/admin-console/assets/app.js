// tally console: keeps the server-rendered pages current by polling the
// JSON API every 2 s, and sends the operator's actions to it with the
// session's CSRF token. No framework, no build step.
//
// Every value from the API is put into the page with textContent or as an
// attribute value, never as HTML: job ids, kinds, payloads and errors are
// written by producers and are untrusted. Row layouts mirror the server's
// (src/pages.rs: job_row, worker_row), as do the time formats
// (src/html.rs).
"use strict";

(function () {
  const POLL_MS = 2000;
  const body = document.body;
  const page = body.dataset.page;
  if (!page || page === "bare") return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const writable = body.dataset.role === "read-write";

  // ---- formats (src/html.rs) ----
  function duration(ms) {
    const s = Math.floor(ms / 1000);
    if (s === 0) return ms + "ms";
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function relative(at, now) {
    return at > now ? "in " + duration(at - now) : duration(now - at) + " ago";
  }
  function stamp(at) {
    return new Date(at).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function rate(v) {
    return v === null || v === undefined ? "–" : v.toFixed(2) + "/s";
  }
  function orDash(v) {
    return v === null || v === undefined || v === "" ? "–" : String(v);
  }

  // ---- DOM helpers (text only) ----
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children || []) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function timeEl(at) {
    if (at === null || at === undefined) return document.createTextNode("–");
    return el("time", { "data-ms": at, title: stamp(at) }, [relative(at, Date.now())]);
  }
  function setText(root, selector, text) {
    for (const node of root.querySelectorAll(selector)) {
      if (node.textContent !== text) node.textContent = text;
    }
  }
  function refreshTimes() {
    const now = Date.now();
    for (const t of document.querySelectorAll("time[data-ms]")) {
      const text = relative(Number(t.dataset.ms), now);
      if (t.textContent !== text) t.textContent = text;
    }
  }
  function seg(s) {
    return encodeURIComponent(s);
  }

  // ---- API ----
  const banner = document.getElementById("status");
  function showStatus(text) {
    if (!banner) return;
    if (text) {
      banner.textContent = text;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }
  async function api(method, path, payload) {
    const headers = { Accept: "application/json" };
    const init = { method, credentials: "same-origin", headers };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new Error("cannot reach the console (" + e.message + ")");
    }
    if (response.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("session ended");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }
  async function read(path) {
    const r = await api("GET", path);
    if (r.status === 503) throw new Error((r.data && r.data.error) || "redis unavailable");
    return r;
  }

  // ---- queue counts (overview cards and the queue page) ----
  function updateCounts(root, q) {
    const values = {
      ready: q.ready,
      scheduled: q.scheduled,
      inFlight: q.inFlight,
      dead: q.dead,
      oldestReadyAgeMs: q.oldestReadyAgeMs === null ? "–" : duration(q.oldestReadyAgeMs),
      completedPerSec: rate(q.rates && q.rates.completedPerSec),
      failedPerSec: rate(q.rates && q.rates.failedPerSec),
      completed: q.counters.completed,
      failed: q.counters.failed,
      workers: q.workers,
      limit: q.limit === null ? "none" : q.limit,
    };
    for (const [field, value] of Object.entries(values)) {
      setText(root, '[data-field="' + field + '"]', String(value));
    }
    for (const badge of root.querySelectorAll('.badge[data-field="state"]')) {
      const state = q.paused ? "paused" : "running";
      if (badge.textContent !== state) {
        badge.textContent = state;
        badge.className = "badge " + state;
      }
    }
  }

  async function refreshOverview() {
    const r = await read("/api/v1/queues");
    if (!r.ok) throw new Error((r.data && r.data.error) || "HTTP " + r.status);
    for (const q of r.data.queues) {
      const card = document.querySelector('.card[data-queue="' + CSS.escape(q.name) + '"]');
      if (card) updateCounts(card, q);
    }
  }

  // ---- queue page ----
  const AT_LABEL = { ready: null, scheduled: "Due", inFlight: "Lease expires", dead: "Died" };
  const selected = new Set();

  function jobRow(queue, job) {
    const dead = job.state === "dead";
    const cells = [];
    if (dead && writable) {
      const box = el("input", { type: "checkbox", class: "select-job", value: job.id, "aria-label": "select " + job.id });
      box.checked = selected.has(job.id);
      cells.push(el("td", { class: "select" }, [box]));
    }
    const href = "/queues/" + seg(queue) + "/jobs/" + seg(job.id);
    cells.push(el("td", { "data-label": "Id", class: "id" }, [el("a", { class: "job-link", href }, [job.id])]));
    cells.push(el("td", { "data-label": "Kind" }, [orDash(job.kind)]));
    cells.push(el("td", { "data-label": "Priority" }, [orDash(job.priority)]));
    cells.push(el("td", { "data-label": "Attempts" }, [job.attempts]));
    cells.push(el("td", { "data-label": "Errors" }, [job.errors]));
    cells.push(el("td", { "data-label": "Crashes" }, [job.crashes]));
    cells.push(el("td", { "data-label": "Created" }, [timeEl(job.createdAtMs)]));
    const label = AT_LABEL[job.state];
    if (label) cells.push(el("td", { "data-label": label }, [timeEl(job.atMs)]));
    if (dead) {
      cells.push(el("td", { "data-label": "Error", class: "error-text" }, [orDash(job.error)]));
      if (writable) {
        cells.push(
          el("td", { "data-label": "Actions", class: "row-actions" }, [
            el("button", { type: "button", "data-action": "retry-one", "data-id": job.id }, ["Retry"]),
            el("button", { type: "button", class: "danger", "data-action": "purge-one", "data-id": job.id }, ["Purge"]),
          ]),
        );
      }
    }
    return el("tr", { "data-id": job.id }, cells);
  }

  function updatePager(queue, jobsPage, limit) {
    const range = document.getElementById("range");
    if (range) {
      range.textContent = jobsPage.jobs.length
        ? jobsPage.offset + 1 + "–" + (jobsPage.offset + jobsPage.jobs.length) + " of " + jobsPage.total
        : "0 of " + jobsPage.total;
    }
    const link = (id, offset, enabled) => {
      const a = document.getElementById(id);
      if (!a) return;
      if (enabled) {
        a.href = "/queues/" + seg(queue) + "?state=" + jobsPage.state + "&offset=" + offset + "&limit=" + limit;
        a.removeAttribute("aria-disabled");
      } else {
        a.removeAttribute("href");
        a.setAttribute("aria-disabled", "true");
      }
    };
    link("prev", Math.max(0, jobsPage.offset - limit), jobsPage.offset > 0);
    link("next", jobsPage.offset + limit, jobsPage.offset + jobsPage.jobs.length < jobsPage.total);
  }

  async function refreshQueue() {
    const queue = body.dataset.queue;
    const state = body.dataset.state;
    const offset = Number(body.dataset.offset || 0);
    const limit = Number(body.dataset.limit || 50);
    const [qr, jr] = await Promise.all([
      read("/api/v1/queues/" + seg(queue)),
      read("/api/v1/queues/" + seg(queue) + "/jobs?state=" + seg(state) + "&offset=" + offset + "&limit=" + limit),
    ]);
    if (!qr.ok) throw new Error((qr.data && qr.data.error) || "HTTP " + qr.status);
    if (!jr.ok) throw new Error((jr.data && jr.data.error) || "HTTP " + jr.status);
    const q = qr.data;
    updateCounts(document.querySelector("main"), q);
    setText(document, '[data-count="ready"]', String(q.ready));
    setText(document, '[data-count="scheduled"]', String(q.scheduled));
    setText(document, '[data-count="inFlight"]', String(q.inFlight));
    setText(document, '[data-count="dead"]', String(q.dead));
    const pause = document.getElementById("pause");
    const resume = document.getElementById("resume");
    if (pause) pause.hidden = q.paused;
    if (resume) resume.hidden = !q.paused;
    const input = document.getElementById("limit-input");
    if (input && document.activeElement !== input) input.value = q.limit === null ? "" : String(q.limit);

    const tbody = document.getElementById("jobs");
    const jobs = jr.data.jobs;
    const visible = new Set(jobs.map((j) => j.id));
    for (const id of Array.from(selected)) if (!visible.has(id)) selected.delete(id);
    tbody.replaceChildren(...jobs.map((j) => jobRow(queue, j)));
    const empty = document.getElementById("jobs-empty");
    if (empty) empty.hidden = jobs.length > 0;
    const all = document.getElementById("select-all");
    if (all) all.checked = jobs.length > 0 && selected.size === jobs.length;
    updatePager(queue, jr.data, limit);
  }

  // ---- job page ----
  async function refreshJob() {
    const queue = body.dataset.queue;
    const id = body.dataset.job;
    const r = await read("/api/v1/queues/" + seg(queue) + "/jobs/" + seg(id));
    const gone = document.getElementById("gone");
    const deadSection = document.getElementById("dead-section");
    const badge = document.querySelector('.badge[data-field="state"]');
    if (r.status === 404) {
      if (gone) gone.hidden = false;
      if (deadSection) deadSection.hidden = true;
      if (badge) {
        badge.textContent = "gone";
        badge.className = "badge state-gone";
      }
      return;
    }
    if (!r.ok) throw new Error((r.data && r.data.error) || "HTTP " + r.status);
    const job = r.data;
    if (gone) gone.hidden = true;
    const labels = { ready: "Ready", scheduled: "Scheduled", inFlight: "In flight", dead: "Dead" };
    if (badge) {
      badge.textContent = labels[job.state] || job.state;
      badge.className = "badge state-" + job.state;
    }
    setText(document, '[data-field="kind"]', orDash(job.kind));
    setText(document, '[data-field="priority"]', orDash(job.priority));
    setText(document, '[data-field="attempts"]', String(job.attempts));
    setText(document, '[data-field="errors"]', String(job.errors));
    setText(document, '[data-field="crashes"]', String(job.crashes));
    const atRow = document.getElementById("at-row");
    const label = AT_LABEL[job.state];
    if (atRow) {
      atRow.hidden = !label;
      setText(atRow, '[data-field="atLabel"]', label || "");
      const dd = atRow.querySelector('[data-field="atMs"]');
      const shown = dd.querySelector("time");
      if (!shown || Number(shown.dataset.ms) !== job.atMs) dd.replaceChildren(timeEl(job.atMs));
    }
    if (deadSection) deadSection.hidden = job.state !== "dead";
    setText(document, "#job-error", orDash(job.error));
  }

  // ---- workers page ----
  function workerRow(w) {
    return el("tr", {}, [
      el("td", { "data-label": "Queue" }, [w.queue]),
      el("td", { "data-label": "Host" }, [w.host]),
      el("td", { "data-label": "Pid" }, [w.pid]),
      el("td", { "data-label": "Program" }, [w.program]),
      el("td", { "data-label": "Version" }, [w.version]),
      el("td", { "data-label": "In flight" }, [w.inFlight + " / " + w.concurrency]),
      el("td", { "data-label": "Started" }, [timeEl(w.startedAtMs)]),
      el("td", { "data-label": "Heartbeat" }, [timeEl(w.heartbeatAtMs)]),
      el("td", { "data-label": "Id" }, [el("code", {}, [w.id])]),
    ]);
  }
  async function refreshWorkers() {
    const r = await read("/api/v1/workers");
    if (!r.ok) throw new Error((r.data && r.data.error) || "HTTP " + r.status);
    document.getElementById("workers").replaceChildren(...r.data.workers.map(workerRow));
    document.getElementById("workers-empty").hidden = r.data.workers.length > 0;
  }

  const refreshers = { overview: refreshOverview, queue: refreshQueue, job: refreshJob, workers: refreshWorkers };
  const refresh = refreshers[page];

  let timer = null;
  let running = false;
  async function tick() {
    clearTimeout(timer);
    if (running) return;
    running = true;
    try {
      if (refresh) await refresh();
      showStatus(null);
      body.dataset.refreshed = String(Date.now());
    } catch (e) {
      showStatus("Not up to date: " + e.message + ". Retrying…");
    } finally {
      running = false;
      refreshTimes();
      timer = setTimeout(tick, POLL_MS);
    }
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") tick();
  });

  // ---- actions ----
  const message = document.getElementById("message");
  function say(text, failed) {
    if (!message) return;
    message.textContent = text;
    message.classList.toggle("failed", Boolean(failed));
  }
  async function act(method, path, payload, done) {
    const r = await api(method, path, payload).catch((e) => ({ ok: false, data: { error: e.message } }));
    if (r.ok) {
      say(done(r.data), false);
    } else {
      say((r.data && r.data.error) || "failed (HTTP " + r.status + ")", true);
    }
    await tick();
    return r.ok;
  }
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  function queuePath(suffix) {
    return "/api/v1/queues/" + seg(body.dataset.queue) + suffix;
  }
  const retried = (d) => "Retried " + plural(d.retried, "job") + (d.skipped ? " (" + d.skipped + " skipped)" : "") + ".";
  const purged = (d) => "Purged " + plural(d.purged, "job") + ".";

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button || !writable) return;
    const action = button.dataset.action;
    const ids = action.endsWith("-selected") ? Array.from(selected) : [button.dataset.id || body.dataset.job];
    if (action.endsWith("-selected") && ids.length === 0) {
      say("Select jobs first.", true);
      return;
    }
    button.disabled = true;
    try {
      switch (action) {
        case "pause":
          await act("POST", queuePath("/pause"), undefined, () => "Paused: workers claim nothing until resumed.");
          break;
        case "resume":
          await act("POST", queuePath("/resume"), undefined, () => "Resumed.");
          break;
        case "unlimit":
          await act("PUT", queuePath("/limit"), { limit: null }, () => "Limit removed.");
          break;
        case "retry-one":
        case "retry-selected":
        case "retry-job":
          await act("POST", queuePath("/dead/retry"), { ids }, retried);
          if (action === "retry-selected") selected.clear();
          break;
        case "purge-one":
        case "purge-selected":
        case "purge-job":
          if (!confirm("Delete " + plural(ids.length, "dead job") + " for good?")) break;
          await act("POST", queuePath("/dead/purge"), { ids }, purged);
          if (action === "purge-selected") selected.clear();
          break;
        case "retry-all":
          if (!confirm("Retry every dead job of " + body.dataset.queue + "?")) break;
          await act("POST", queuePath("/dead/retry"), { all: true }, retried);
          break;
        case "purge-all":
          if (!confirm("Delete every dead job of " + body.dataset.queue + " for good?")) break;
          await act("POST", queuePath("/dead/purge"), { all: true }, purged);
          break;
      }
    } finally {
      button.disabled = false;
    }
  });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box.id === "select-all") {
      for (const b of document.querySelectorAll("input.select-job")) {
        b.checked = box.checked;
        if (box.checked) selected.add(b.value);
        else selected.delete(b.value);
      }
    } else if (box.classList && box.classList.contains("select-job")) {
      if (box.checked) selected.add(box.value);
      else selected.delete(box.value);
    }
  });

  const limitForm = document.getElementById("limit-form");
  if (limitForm) {
    limitForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = document.getElementById("limit-input");
      const value = input.value.trim();
      if (!/^\d+$/.test(value)) {
        say("Enter a whole number of jobs, or remove the limit.", true);
        return;
      }
      input.blur();
      await act("PUT", queuePath("/limit"), { limit: Number(value) }, (d) => "Limit set to " + d.limit + ".");
    });
  }

  // Server-rendered checkboxes start unchecked; the set follows them.
  tick();
})();
