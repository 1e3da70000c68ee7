// One job: a live progress bar (succeeded, failed, total, elapsed, ETA), images (or a video job's
// players) as they finish, failed items with their errors, estimated and actual cost, why a job on
// the user's own key is paused, and cancel / retry failed (or resume) / download ZIP.

import { get, post } from "../api.js";
import { archiveDownload } from "../archive-download.js";
import { inputPreview, recordedInputs } from "../image-inputs.js";
import { formatUsd } from "../params.js";
import {
  announce,
  confirmDialog,
  errorBox,
  formatDate,
  formatDuration,
  h,
  loadingBox,
  mount,
  plural,
  showError,
  statusBadge,
  toast,
  toEpochSeconds,
} from "../ui.js";
import { openLightbox } from "./gallery.js";

const ACTIVE = new Set(["queued", "running", "paused"]);
const POLL_MS = 1500;
const DRAIN_POLL_MS = 5000;

export async function render(container, { params }) {
  const jobId = params.id;
  let job = null;
  let timer = null;
  let ticker = null;
  let stopped = false;
  const images = new Map(); // item id -> image
  const clips = new Map(); // item id -> video tile (video jobs)
  const failedItems = new Map();
  let lastFinished = -1;

  const title = h("h1", { id: "job-title", text: "Job" });
  const badgeSlot = h("span");
  const progress = h("progress", { max: 1, value: 0, "aria-labelledby": "job-progress-label" });
  const progressLabel = h("span", { id: "job-progress-label", text: "Progress" });
  const percent = h("span", { class: "percent", text: "0%" });
  const liveStatus = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
  const stat = (label, cls) => {
    const dd = h("dd", { text: "—" });
    return { el: h("div", { class: `stat ${cls || ""}` }, h("dt", { text: label }), dd), dd };
  };
  const stats = {
    succeeded: stat("Succeeded", "stat-ok"),
    failed: stat("Failed", "stat-bad"),
    total: stat("Total"),
    elapsed: stat("Elapsed"),
    eta: stat("ETA"),
  };
  const reasons = h("div");
  const pausedBox = h("div", { id: "job-paused" });
  const meta = h("p", { class: "hint head-meta" });
  const cancelBtn = h("button", { type: "button", class: "btn btn-danger", text: "Cancel job", hidden: true });
  const retryBtn = h("button", { type: "button", class: "btn", text: "Retry failed", hidden: true });
  const download = archiveDownload({
    request: () => ({ path: `/v1/jobs/${encodeURIComponent(jobId)}/archive` }),
    filename: (format) => `${job.name || job.job_id}${format === "imagefolder" ? "-imagefolder" : ""}.zip`,
  });
  const zipBtn = download.button;
  zipBtn.disabled = true;
  const grid = h("ul", { class: "image-grid", "aria-label": "Finished images" });
  const gridEmpty = h("p", { class: "hint", text: "Images appear here as they finish." });
  const gridTitle = h("h2", { id: "job-images-title", text: "Images" });
  const failedList = h("ul", { class: "errors-list item-errors" });
  const failedBox = h("section", { class: "card", hidden: true, "aria-labelledby": "job-failed-title" }, h("h2", { id: "job-failed-title", text: "Failed prompts" }), failedList);

  mount(container, h("div", { class: "screen-head" }, title), loadingBox("Loading job…"));

  function elapsedSeconds() {
    const start = toEpochSeconds(job.started_at) ?? toEpochSeconds(job.created_at);
    if (!start) return null;
    const end = toEpochSeconds(job.finished_at) ?? Date.now() / 1000;
    return Math.max(0, end - start);
  }

  function counts() {
    const c = job.counters || job.counts || {};
    const pick = (k) => Number(job[k] ?? c[k] ?? job[`${k}_count`] ?? 0);
    return { succeeded: pick("succeeded"), failed: pick("failed"), queued: pick("queued"), running: pick("running"), total: Number(job.total || 0) };
  }

  function update() {
    const c = counts();
    const done = c.succeeded + c.failed;
    const fraction = c.total ? done / c.total : 0;
    const pct = Math.round((job.progress !== undefined && job.progress !== null ? normalizeProgress(job.progress) : fraction) * 100);
    title.textContent = job.name || `Job ${job.job_id.slice(-8)}`;
    mount(badgeSlot, statusBadge(job.status));
    progress.max = c.total || 1;
    progress.value = done;
    percent.textContent = `${pct}%`;
    progress.setAttribute("aria-valuetext", `${done} of ${c.total} finished (${pct}%)`);
    container.dataset.progress = String(pct);
    container.dataset.status = job.status;
    stats.succeeded.dd.textContent = String(c.succeeded);
    stats.failed.dd.textContent = String(c.failed);
    stats.total.dd.textContent = String(c.total);
    stats.elapsed.dd.textContent = formatDuration(elapsedSeconds());
    const active = ACTIVE.has(job.status);
    stats.eta.dd.textContent = active ? (job.eta_seconds != null ? formatDuration(job.eta_seconds) : "estimating…") : "—";
    const reasonMap = job.errors_by_reason || job.errors || {};
    const entries = Object.entries(reasonMap).filter(([, n]) => n);
    mount(
      reasons,
      entries.length
        ? h(
            "div",
            { class: "callout callout-warn" },
            h("div", {}, h("p", { text: "Errors by reason:" }), h("ul", { class: "errors-list" }, entries.map(([r, n]) => h("li", { text: `${r.replaceAll("_", " ").replaceAll("-", " ")}: ${n}` })))),
          )
        : null,
    );
    const paused = job.status === "paused" && job.paused;
    mount(
      pausedBox,
      paused
        ? h(
            "div",
            { class: "callout callout-error", role: "alert", "data-code": job.paused.code },
            h("div", {}, h("p", { text: `Paused: ${job.paused.reason}` }), h("p", {}, "Replace your key on the ", h("a", { href: "#/account", text: "Account" }), " screen, then resume.")),
          )
        : null,
    );
    meta.textContent = [
      `Created ${formatDate(job.created_at)}`,
      job.key_source === "own" ? "on your own Together key" : null,
      job.estimated_usd != null ? `estimated ${formatUsd(job.estimated_usd)}` : null,
      `cost so far ${formatUsd(job.actual_usd ?? 0)}`,
      job.collection ? `collection “${job.collection}”` : null,
      job.finished_at ? `finished ${formatDate(job.finished_at)}` : null,
    ]
      .filter(Boolean)
      .join(" · ");
    cancelBtn.hidden = !active;
    retryBtn.hidden = paused ? false : active || c.failed === 0;
    retryBtn.textContent = paused ? "Resume" : "Retry failed";
    zipBtn.disabled = c.succeeded === 0;
    gridEmpty.hidden = images.size + clips.size > 0;
    if (job.kind === "video") {
      gridTitle.textContent = "Videos";
      gridEmpty.textContent = "Videos appear here as they finish.";
      grid.setAttribute("aria-label", "Finished videos");
      download.select.querySelector('option[value="imagefolder"]')?.remove();
    }
    const spoken = active
      ? `${done} of ${c.total} finished`
      : `Job ${job.status.replaceAll("_", " ")}: ${c.succeeded} succeeded, ${c.failed} failed.`;
    if (liveStatus.textContent !== spoken) liveStatus.textContent = spoken;
  }

  async function loadItems(status) {
    const found = [];
    let cursor = null;
    do {
      const page = await get(`/v1/jobs/${encodeURIComponent(jobId)}/items`, { status, cursor });
      found.push(...(page.items || []));
      cursor = page.next_cursor;
    } while (cursor && !stopped);
    return found;
  }

  async function refreshItems() {
    const c = counts();
    const finished = c.succeeded + c.failed;
    if (finished === lastFinished) return;
    const [succeeded, failed] = await Promise.all([
      c.succeeded ? loadItems("succeeded") : [],
      c.failed ? loadItems("failed") : [],
    ]);
    lastFinished = finished;
    let added = 0;
    for (const item of succeeded) {
      const key = item.item_id || item.id;
      if (item.video && item.video.url && !clips.has(key)) {
        const clip = videoTile(item);
        clips.set(key, clip);
        grid.append(clip);
        added += 1;
        continue;
      }
      if (!item.image || images.has(key)) continue;
      // Items carry a short image reference; the job's parameters fill in the rest for the lightbox.
      const image = {
        ...(job.params || {}),
        ...item.image,
        prompt: item.prompt,
        collection: job.collection,
        created_at: item.finished_at,
        inputs: item.inputs || item.image.inputs || null,
      };
      images.set(key, image);
      grid.append(tile(image));
      added += 1;
    }
    // A retried item leaves the failed list.
    failedItems.clear();
    for (const item of failed) failedItems.set(item.item_id || item.id, item);
    failedList.replaceChildren(
      ...[...failedItems.values()].map((item) =>
        h(
          "li",
          {},
          h("strong", { text: item.prompt }),
          " — ",
          errorText(item.error),
          item.attempts ? h("span", { class: "hint", text: ` (${plural(item.attempts, "attempt")})` }) : null,
        ),
      ),
    );
    failedBox.hidden = failedItems.size === 0;
    if (added) announce(`${plural(added, job.kind === "video" ? "new video" : "new image")} finished`);
  }

  // A video job's item: its player (the input image, or the browser's first frame, as poster) and cost.
  function videoTile(item) {
    const video = h("video", {
      src: item.video.url,
      controls: true,
      muted: true,
      preload: "metadata",
      playsinline: true,
      width: 256,
      height: 256,
      "aria-label": `Video: ${item.prompt}`,
    });
    if (item.video.poster_url) video.setAttribute("poster", item.video.poster_url);
    const cost = item.video.cost_usd != null ? ` · cost ${formatUsd(item.video.cost_usd)}` : "";
    return h(
      "li",
      { class: "tile video-tile", "data-video-id": item.video.id },
      video,
      h("p", { class: "tile-caption", title: item.prompt, text: `${item.prompt}${cost}` }),
    );
  }

  function tile(image) {
    const open = h(
      "button",
      { type: "button", class: "tile-open", "aria-label": `Open image: ${image.prompt}` },
      h("img", { src: image.thumbnail_url || image.url, alt: image.prompt, loading: "lazy", width: 256, height: 256 }),
    );
    open.addEventListener("click", () => {
      const list = [...images.values()];
      openLightbox(list, list.findIndex((x) => x.id === image.id), {});
    });
    const given = recordedInputs(image.inputs);
    if (!given.length) return h("li", { class: "tile" }, open, h("p", { class: "tile-caption", title: image.prompt, text: image.prompt }));
    // Image to image: the input beside the output.
    const inputSlot = h("div", { class: "tile-input" });
    inputPreview(given[0]).then((input) => {
      if (input) mount(inputSlot, h("img", { src: input.url, alt: `Input: ${input.label}`, loading: "lazy", width: 256, height: 256 }));
    });
    return h(
      "li",
      { class: "tile tile-with-input" },
      h("div", { class: "tile-pair", "aria-label": "Input and output" }, inputSlot, open),
      h("p", { class: "tile-caption", title: image.prompt, text: image.prompt }),
    );
  }

  async function poll() {
    timer = null;
    try {
      job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
      if (stopped) return;
      update();
      await refreshItems();
      if (stopped) return;
      update();
    } catch (err) {
      if (stopped) return;
      if (!job) {
        mount(container, h("div", { class: "screen-head" }, h("h1", { id: "job-title", text: "Job" })), errorBox(err, { retry: () => render(container, { params }) }));
        return;
      }
      showError(err, "Could not refresh the job");
    }
    if (!stopped && job && ACTIVE.has(job.status)) timer = setTimeout(poll, POLL_MS);
    else if (!stopped && job && draining()) timer = setTimeout(poll, DRAIN_POLL_MS);
  }

  // A cancelled job whose running prompts are still finishing (their images still arrive).
  function draining() {
    const c = counts();
    return job.status === "cancelled" && !job.finished_at && Math.max(0, c.queued) + Math.max(0, c.running) > 0;
  }

  cancelBtn.addEventListener("click", async () => {
    const ok = await confirmDialog("Queued prompts will not be generated. Images already finished are kept.", {
      title: "Cancel this job?",
      confirmLabel: "Cancel job",
      danger: true,
    });
    if (!ok) return;
    cancelBtn.disabled = true;
    try {
      job = { ...job, ...(await post(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`)) };
      toast("Job cancelled.");
      update();
      restart();
    } catch (err) {
      showError(err, "Could not cancel");
    } finally {
      cancelBtn.disabled = false;
    }
  });

  retryBtn.addEventListener("click", async () => {
    retryBtn.disabled = true;
    try {
      const failedBefore = counts().failed;
      const result = await post(`/v1/jobs/${encodeURIComponent(jobId)}/retry`);
      if (result && result.job_id) {
        job = result;
        update();
      }
      toast(failedBefore ? `Retrying ${plural(failedBefore, "failed prompt")}.` : "Job resumed.");
      lastFinished = -1;
      restart();
    } catch (err) {
      showError(err, "Could not retry");
    } finally {
      retryBtn.disabled = false;
    }
  });

  function restart() {
    if (timer) clearTimeout(timer);
    timer = setTimeout(poll, 300);
  }

  await poll();
  if (!job) return () => {};

  mount(
    container,
    h("p", {}, h("a", { href: "#/jobs", text: "← All jobs" })),
    h(
      "div",
      { class: "screen-head" },
      h("div", { class: "head-title" }, title, badgeSlot),
      h("div", { class: "actions" }, cancelBtn, retryBtn, download.element),
      meta,
    ),
    pausedBox,
    h(
      "section",
      { class: "card", "aria-labelledby": "job-progress-label" },
      h("div", { class: "progress-wrap" }, h("div", { class: "progress-label" }, progressLabel, percent), progress, liveStatus),
      h("dl", { class: "stats" }, Object.values(stats).map((s) => s.el)),
      reasons,
    ),
    h("section", { class: "card", "aria-labelledby": "job-images-title" }, gridTitle, gridEmpty, grid),
    failedBox,
  );
  update();
  ticker = setInterval(() => {
    if (job && ACTIVE.has(job.status)) stats.elapsed.dd.textContent = formatDuration(elapsedSeconds());
  }, 1000);

  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    clearInterval(ticker);
  };
}

function normalizeProgress(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return 0;
  return n > 1 ? n / 100 : n;
}

function errorText(error) {
  if (!error) return "failed";
  if (typeof error === "string") return error;
  return error.message || error.code || "failed";
}

