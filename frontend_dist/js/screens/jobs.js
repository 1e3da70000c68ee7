// Jobs: the list, filtered by status, with pagination. Refreshes every 5 s while any job on the page
// is active, and stops when none is.

import { get } from "../api.js";
import { emptyState, errorBox, formatDate, h, loadingBox, mount, statusBadge } from "../ui.js";

const STATUSES = ["queued", "running", "paused", "completed", "completed_with_errors", "failed", "cancelled"];
const ACTIVE = new Set(["queued", "running", "paused"]);
const REFRESH_MS = 5000;
const PAGE_SIZE = 20; // jobs per page; "#/jobs?limit=N" overrides it (1-100)

export async function render(container, { query }) {
  let status = STATUSES.includes(query.status) ? query.status : "";
  const pageSize = Math.min(100, Math.max(1, Number.parseInt(query.limit, 10) || PAGE_SIZE));
  let cursors = [null]; // cursor of each page we have visited; the last one is the current page
  let timer = null;
  let stopped = false;
  let requestId = 0;

  const filter = h(
    "select",
    { id: "jobs-status", name: "status" },
    h("option", { value: "", text: "All statuses" }),
    STATUSES.map((s) => h("option", { value: s, text: s.replaceAll("_", " ") })),
  );
  filter.value = status;
  const refreshNote = h("span", { class: "refresh-note", role: "status", "aria-live": "polite" });
  const body = h("div", { "aria-live": "polite" });
  const prevBtn = h("button", { type: "button", class: "btn", text: "← Newer" });
  const nextBtn = h("button", { type: "button", class: "btn", text: "Older →" });
  const pageLabel = h("span", { class: "hint" });
  const pager = h("nav", { class: "pager", "aria-label": "Jobs pages", hidden: true }, prevBtn, pageLabel, nextBtn);
  let nextCursor = null;

  async function load({ quiet = false } = {}) {
    const id = ++requestId;
    if (timer) clearTimeout(timer);
    timer = null;
    if (!quiet) mount(body, loadingBox("Loading jobs…"));
    try {
      const page = await get("/v1/jobs", { status, limit: pageSize, cursor: cursors[cursors.length - 1] });
      if (stopped || id !== requestId) return;
      const jobs = page.jobs || [];
      nextCursor = page.next_cursor || null;
      renderJobs(jobs);
      const anyActive = jobs.some((j) => ACTIVE.has(j.status));
      container.dataset.autorefresh = String(anyActive);
      refreshNote.replaceChildren(...(anyActive ? [h("span", { class: "dot", "aria-hidden": "true" }), "Refreshing every 5 s while jobs run"] : []));
      if (anyActive) timer = setTimeout(() => load({ quiet: true }), REFRESH_MS);
    } catch (err) {
      if (stopped || id !== requestId) return;
      container.dataset.autorefresh = "false";
      refreshNote.replaceChildren();
      mount(body, errorBox(err, { retry: () => load() }));
    }
  }

  function renderJobs(jobs) {
    if (!jobs.length) {
      pager.hidden = cursors.length === 1;
      mount(
        body,
        emptyState(
          status ? `No ${status.replaceAll("_", " ")} jobs` : "No batch jobs yet",
          status ? "Try another status filter." : "Queue many prompts at once from the Batch page.",
          status ? null : h("a", { class: "btn btn-primary", href: "#/batch", text: "Start a batch" }),
        ),
      );
      return;
    }
    mount(body, h("ul", { class: "job-list" }, jobs.map(jobRow)));
    pager.hidden = cursors.length === 1 && !nextCursor;
    prevBtn.disabled = cursors.length === 1;
    nextBtn.disabled = !nextCursor;
    pageLabel.textContent = `Page ${cursors.length}`;
  }

  prevBtn.addEventListener("click", () => {
    if (cursors.length > 1) cursors = cursors.slice(0, -1);
    load();
  });
  nextBtn.addEventListener("click", () => {
    if (!nextCursor) return;
    cursors = [...cursors, nextCursor];
    load();
  });
  filter.addEventListener("change", () => {
    status = filter.value;
    cursors = [null];
    history.replaceState(null, "", status ? `#/jobs?status=${status}` : "#/jobs");
    load();
  });

  mount(
    container,
    h("div", { class: "screen-head" }, h("h1", { id: "jobs-title", text: "Jobs" }), h("a", { class: "btn btn-primary", href: "#/batch", text: "New batch" })),
    h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "jobs-status", text: "Status" }), filter), h("div", { class: "spacer" }), refreshNote),
    body,
    pager,
  );
  await load();

  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

function jobRow(job) {
  const total = Number(job.total || 0);
  const c = job.counters || job.counts || {};
  const pick = (k) => Number(job[k] ?? c[k] ?? job[`${k}_count`] ?? 0);
  const done = pick("succeeded") + pick("failed");
  const label = job.name || `Job ${job.job_id.slice(-8)}`;
  return h(
    "li",
    { class: "job-row", dataset: { jobId: job.job_id, status: job.status } },
    h("h2", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, text: label })),
    statusBadge(job.status),
    h("progress", { max: total || 1, value: done, "aria-label": `${label}: ${done} of ${total} finished` }),
    h(
      "div",
      { class: "job-meta" },
      h("span", { text: `${done} / ${total} finished` }),
      pick("failed") ? h("span", { text: `${pick("failed")} failed` }) : null,
      job.collection ? h("span", { text: `Collection: ${job.collection}` }) : null,
      h("span", { text: `Created ${formatDate(job.created_at)}` }),
    ),
  );
}
