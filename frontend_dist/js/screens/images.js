// Images: upload reference photos (drag and drop many files or a ZIP) straight to S3, several at a
// time with per-file progress and the server's per-file verdict; browse and delete uploads by collection.

import { del, get } from "../api.js";
import { confirmDialog, emptyState, errorBox, errorMessage, field, h, loadingBox, mount, plural, setFieldError, showError, statusBadge, toast } from "../ui.js";
import { editOnGenerate, uploadInput } from "../image-inputs.js";
import { CONCURRENCY, formatBytes, localProblem, runPool, uploadFile } from "../uploads.js";

const COLLECTION_RE = /^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$/;
const PAGE_SIZE = 48;

export async function render(container, { query }) {
  const controller = new AbortController();
  let filter = query.collection || "";
  let cursor = null;
  let done = false;
  let generation = 0;

  const collectionInput = h("input", { type: "text", name: "collection", maxlength: 64, placeholder: "e.g. product-shots", value: filter });
  const collection = field("Collection", collectionInput, {
    id: "images-collection",
    hint: "Uploads are filed under this name (optional). Letters, digits, space, _ . -",
  });
  const fileInput = h("input", {
    type: "file",
    id: "images-files",
    name: "files",
    multiple: true,
    class: "visually-hidden",
    accept: "image/jpeg,image/png,image/webp,.jpg,.jpeg,.png,.webp,.zip,application/zip",
  });
  const dropzone = h(
    "label",
    { class: "dropzone", for: "images-files" },
    fileInput,
    h("strong", { text: "Drop images or a ZIP here" }),
    h("span", { text: " or click to choose files" }),
    h("span", { class: "hint", text: "JPEG, PNG or WebP up to 20 MiB each; a ZIP of up to 1,000 images (500 MiB)." }),
  );
  const queue = h("ul", { class: "upload-queue", "aria-label": "Uploads in progress" });
  const queueStatus = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
  const storage = h("p", { class: "hint storage-usage" });
  const grid = h("ul", { class: "image-grid upload-grid", "aria-label": "Your uploaded images" });
  const moreBtn = h("button", { type: "button", class: "btn", text: "Load more", hidden: true });
  const listBox = h("div", {}, loadingBox("Loading your images…"));

  mount(
    container,
    h("h1", { id: "images-title", text: "Images" }),
    h("p", { class: "lede", text: "Reference images for generation: each is checked, stripped of metadata and given a thumbnail." }),
    h("div", { class: "card stack" }, collection.wrap, dropzone, queueStatus, queue),
    h("div", { class: "section-head" }, h("h2", { text: "Uploaded images" }), storage),
    listBox,
    moreBtn,
  );

  function currentCollection() {
    const value = collectionInput.value.trim();
    if (value && !COLLECTION_RE.test(value)) {
      setFieldError(collection, "1–64 characters: letters, digits, space, _ . - (starting with a letter or digit).");
      return null;
    }
    setFieldError(collection, "");
    return value;
  }

  // --- uploading -------------------------------------------------------------------------------

  function queueRow(file) {
    const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "upload-status", text: "Waiting" });
    const details = h("div", { class: "upload-details" });
    const row = h(
      "li",
      { class: "upload-row", dataset: { name: file.name } },
      h("div", { class: "upload-head" }, h("span", { class: "upload-name", text: file.name }), h("span", { class: "hint", text: formatBytes(file.size) })),
      progress,
      status,
      details,
    );
    return { row, progress, status, details };
  }

  function showVerdict(ui, upload) {
    ui.row.dataset.status = upload.status;
    if (upload.kind === "zip") {
      const counts = upload.file_counts || {};
      ui.status.replaceChildren(
        statusBadge(upload.status),
        upload.status === "rejected"
          ? ` ${upload.error.message}`
          : ` ${plural(counts.ready || 0, "image")} ready, ${counts.rejected || 0} rejected${counts.skipped ? `, ${counts.skipped} skipped` : ""}`,
      );
      const rejected = (upload.files || []).filter((f) => f.status === "rejected");
      if (rejected.length) {
        mount(
          ui.details,
          h(
            "details",
            {},
            h("summary", { text: `${plural(rejected.length, "file")} rejected` }),
            h("ul", { class: "verdicts" }, rejected.map((f) => h("li", {}, h("code", { text: f.name }), `: ${f.error.message}`))),
          ),
        );
      }
    } else if (upload.status === "ready") {
      ui.status.replaceChildren(statusBadge("ready"), ` ${upload.width}×${upload.height} ${(upload.content_type || "").replace("image/", "").toUpperCase()}`);
    } else {
      ui.status.replaceChildren(statusBadge("rejected"), ` ${upload.error ? upload.error.message : "rejected"}`);
    }
  }

  async function uploadOne(file, ui, target) {
    const problem = localProblem(file);
    if (problem) {
      ui.row.dataset.status = "rejected";
      ui.status.replaceChildren(statusBadge("rejected"), ` ${problem}`);
      return false;
    }
    try {
      const upload = await uploadFile(file, {
        collection: target,
        signal: controller.signal,
        on: ({ phase, progress, upload: u }) => {
          if (progress !== undefined) ui.progress.value = progress;
          if (phase === "announcing") ui.status.textContent = "Starting…";
          if (phase === "sending") ui.status.textContent = `Uploading ${Math.round((progress || 0) * 100)}%`;
          if (phase === "verifying") ui.status.textContent = u && u.status === "processing" ? "Unpacking…" : "Verifying…";
        },
      });
      showVerdict(ui, upload);
      return upload.status === "ready";
    } catch (err) {
      if (err.name === "AbortError") return false;
      ui.row.dataset.status = "error";
      ui.status.replaceChildren(statusBadge("failed"), ` ${errorMessage(err)}`);
      if (err.field) setFieldError(collection, err.field === "collection" ? errorMessage(err) : "");
      return false;
    }
  }

  async function uploadAll(files) {
    const target = currentCollection();
    if (target === null) return;
    const items = files.map((file) => ({ file, ui: queueRow(file) }));
    queue.prepend(...items.map((i) => i.ui.row));
    queueStatus.textContent = `Uploading ${plural(items.length, "file")}`;
    let ok = 0;
    await runPool(items, CONCURRENCY, async ({ file, ui }) => {
      if (await uploadOne(file, ui, target)) ok += 1;
    });
    if (controller.signal.aborted) return;
    queueStatus.textContent = `${ok} of ${plural(items.length, "file")} uploaded`;
    toast(`${ok} of ${plural(items.length, "file")} uploaded`, { kind: ok === items.length ? "success" : "info" });
    if (target !== filter) collectionInput.value = target;
    filter = target;
    reload();
  }

  fileInput.addEventListener("change", () => {
    const files = Array.from(fileInput.files || []);
    fileInput.value = "";
    if (files.length) uploadAll(files);
  });
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropzone.addEventListener(type, () => dropzone.classList.remove("dragging"));
  }
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = Array.from((event.dataTransfer && event.dataTransfer.files) || []);
    if (files.length) uploadAll(files);
  });

  // --- the list ----------------------------------------------------------------------------------

  function card(upload) {
    const remove = h("button", { type: "button", class: "btn btn-small btn-ghost", text: "Delete", "aria-label": `Delete ${upload.filename}` });
    const item = h(
      "li",
      { class: "image-card upload-card", dataset: { id: upload.id } },
      upload.thumbnail_url
        ? h("img", { src: upload.thumbnail_url, alt: upload.filename || "uploaded image", loading: "lazy", width: 256, height: 256 })
        : h("div", { class: "upload-placeholder", text: upload.kind === "zip" ? "ZIP" : "—" }),
      h(
        "div",
        { class: "image-meta" },
        h("span", { class: "upload-name", text: upload.filename || upload.id }),
        h("span", {}, statusBadge(upload.status), upload.width ? ` ${upload.width}×${upload.height}` : "", upload.collection ? ` · ${upload.collection}` : ""),
        upload.error ? h("span", { class: "hint", text: upload.error.message }) : null,
        upload.kind === "image" && upload.status === "ready"
          ? h("button", {
              type: "button",
              class: "btn btn-small",
              text: "Edit this image",
              "aria-label": `Edit ${upload.filename || "this image"}`,
              onclick: () => editOnGenerate(uploadInput(upload)),
            })
          : null,
        remove,
      ),
    );
    remove.addEventListener("click", async () => {
      if (!(await confirmDialog(`Delete ${upload.filename || "this upload"}?`, { confirmLabel: "Delete", danger: true }))) return;
      try {
        await del(`/v1/uploads/${encodeURIComponent(upload.id)}`);
        item.remove();
        toast("Deleted");
      } catch (err) {
        showError(err, "Delete failed");
      }
    });
    return item;
  }

  async function loadPage() {
    const mine = generation;
    try {
      const page = await get("/v1/uploads", { collection: filter, cursor, limit: PAGE_SIZE }, { signal: controller.signal });
      if (mine !== generation) return;
      if (listBox.firstChild !== grid) mount(listBox, grid);
      grid.append(...page.uploads.filter((u) => !u.parent_id || u.kind === "image").map(card));
      cursor = page.next_cursor;
      done = !cursor;
      moreBtn.hidden = done;
      storage.textContent = `${formatBytes(page.storage.used_bytes)} of ${formatBytes(page.storage.quota_bytes)} used`;
      if (!grid.children.length) mount(listBox, emptyState("No images yet", "Drop some photos above to upload them."));
    } catch (err) {
      if (err.name === "AbortError") return;
      mount(listBox, errorBox(err, { retry: reload }));
    }
  }

  function reload() {
    generation += 1;
    cursor = null;
    done = false;
    grid.replaceChildren();
    loadPage();
  }

  moreBtn.addEventListener("click", () => !done && loadPage());
  collectionInput.addEventListener("change", () => {
    const value = currentCollection();
    // Unchanged (e.g. the field loses focus after an upload already showed that collection): keep
    // the list, so a click on one of its buttons is not lost to a re-render between press and release.
    if (value === null || value === filter) return;
    filter = value;
    reload();
  });
  reload();
  return () => controller.abort();
}
