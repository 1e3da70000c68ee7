// Videos: text-to-video, or "animate this image" (#/videos?image=ID), a status display while the
// video renders, and a <video> player for each of the caller's videos.

import { del, get, post } from "../api.js";
import { formatUsd } from "../params.js";
import { announce, emptyState, errorBox, field, formatDate, h, loadingBox, mount, showError, sleep, statusBadge, toast } from "../ui.js";

const POLL_MS = 2000;

function player(video) {
  // No server-side poster for text-to-video: preload="metadata" lets the browser show the first frame.
  return h("video", {
    class: "video-player",
    controls: true,
    muted: true,
    playsinline: true,
    preload: "metadata",
    src: video.url,
    poster: video.poster_url || undefined,
    "data-video-id": video.video_id,
    "aria-label": `Video: ${video.prompt || "from an image"}`,
  });
}

function videoCard(video, onDelete) {
  const cost = video.cost_usd != null ? `cost ${formatUsd(video.cost_usd)}` : `estimated ${formatUsd(video.estimated_cost_usd)}`;
  const removeBtn = h("button", { type: "button", class: "btn btn-small btn-ghost", text: "Delete" });
  removeBtn.addEventListener("click", () => onDelete(video));
  const body =
    video.status === "completed"
      ? player(video)
      : video.status === "failed"
        ? h("p", { class: "error", text: `Failed: ${video.error?.message || video.error?.code || "unknown reason"}` })
        : h("p", { class: "video-status", role: "status", text: `Rendering… (${video.status})` });
  return h(
    "article",
    { class: "card video-card", "data-status": video.status, "data-video-id": video.video_id },
    body,
    h("p", { class: "video-prompt", text: video.prompt || "(no prompt)" }),
    h("p", { class: "hint" }, statusBadge(video.status), ` ${video.model} · ${video.width}×${video.height} · ${video.seconds} s · `, h("span", { class: "video-cost", text: cost }), ` · ${formatDate(video.created_at)}`),
    removeBtn,
  );
}

export async function render(container, { query = {} } = {}) {
  let alive = true;
  const listBody = h("div", { class: "video-grid", id: "video-list" }, loadingBox("Loading videos…"));
  const status = h("p", { class: "video-status", id: "video-status", role: "status", "aria-live": "polite" });
  const prompt = h("textarea", { id: "video-prompt", rows: 3, maxlength: 4000, placeholder: "A slow pan over a misty harbour at dawn" });
  const model = h("select", { id: "video-model" });
  const size = h("select", { id: "video-size" });
  const seconds = h("select", { id: "video-seconds" });
  const imageId = h("input", { id: "video-image", type: "text", value: query.image || "", placeholder: "optional: an image or upload id (first frame)", autocomplete: "off" });
  const submitBtn = h("button", { type: "submit", class: "btn btn-primary", id: "video-submit", text: "Make video" });
  let catalog = [];

  function fillModel() {
    const spec = catalog.find((m) => m.id === model.value);
    if (!spec) return;
    mount(size, ...spec.sizes.map((s) => h("option", { value: `${s.width}x${s.height}`, text: `${s.width}×${s.height}` })));
    mount(seconds, ...spec.seconds.map((s) => h("option", { value: String(s), text: `${s} s` })));
    imageId.disabled = spec.keyframes === "none";
  }
  model.addEventListener("change", fillModel);

  async function loadList() {
    try {
      const page = await get("/v1/videos", { limit: 24 });
      if (!alive) return;
      mount(listBody, ...(page.videos.length ? page.videos.map((v) => videoCard(v, remove)) : [emptyState("No videos yet", "Describe a scene above, or animate one of your images.")]));
    } catch (err) {
      mount(listBody, errorBox(err, { retry: loadList }));
    }
  }

  async function remove(video) {
    try {
      await del(`/v1/videos/${video.video_id}`);
      toast("Video deleted.");
      await loadList();
    } catch (err) {
      showError(err, "Could not delete the video");
    }
  }

  async function follow(videoId) {
    while (alive) {
      const video = await get(`/v1/videos/${videoId}`);
      status.textContent = video.status === "completed" ? "Your video is ready." : video.status === "failed" ? `The video failed: ${video.error?.message || ""}` : `Rendering… (${video.status})`;
      if (video.status === "completed" || video.status === "failed") {
        announce(status.textContent);
        await loadList();
        return;
      }
      await sleep(POLL_MS);
    }
  }

  const form = h(
    "form",
    { class: "card stack", id: "video-form" },
    field("Prompt", prompt).wrap,
    field("Model", model).wrap,
    h("div", { class: "row" }, field("Size", size).wrap, field("Length", seconds).wrap),
    field("Animate an image", imageId, { hint: "The image is the first frame and the poster." }).wrap,
    submitBtn,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const [width, height] = size.value.split("x").map(Number);
    const body = { model: model.value, width, height, seconds: Number(seconds.value) };
    if (prompt.value.trim()) body.prompt = prompt.value;
    if (imageId.value.trim() && !imageId.disabled) body.image_id = imageId.value.trim();
    submitBtn.disabled = true;
    try {
      const video = await post("/v1/videos", body);
      status.textContent = `Queued (estimated ${formatUsd(video.estimated_cost_usd)}).`;
      await loadList();
      await follow(video.video_id);
    } catch (err) {
      showError(err, "Could not start the video");
      status.textContent = "";
    } finally {
      submitBtn.disabled = false;
    }
  });

  mount(
    container,
    h("div", { class: "screen-head" }, h("h1", { text: "Videos" }), h("p", { class: "lede", text: "Text-to-video, or animate one of your images. Videos render in the background." })),
    form,
    h("h2", { text: "Your videos" }),
    listBody,
  );
  try {
    catalog = (await get("/v1/videos/models")).models;
    mount(model, ...catalog.map((m) => h("option", { value: m.id, text: `${m.name} (${formatUsd(m.price_per_video)})` })));
    model.value = catalog.some((m) => m.id === "pixverse/pixverse-v5") ? "pixverse/pixverse-v5" : catalog[0]?.id;
    fillModel();
  } catch (err) {
    showError(err, "Could not load the video models");
  }
  await loadList();
  return () => {
    alive = false;
  };
}
