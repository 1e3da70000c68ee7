// Gallery: grid and list views, loaded by cursor as you scroll, filtered by collection; a lightbox
// (prompt, parameters, seed: re-run, share, download, delete); multi-select to download a ZIP or delete;
// share the chosen collection.

import { del, get, post } from "../api.js";
import { archiveDownload } from "../archive-download.js";
import {
  announce,
  confirmDialog,
  emptyState,
  errorBox,
  formatDate,
  h,
  loadingBox,
  mount,
  plural,
  shortModel,
  showError,
  toast,
  uid,
} from "../ui.js";
import { formatUsd } from "../params.js";
import { editOnGenerate, imageInput, inputPreview, inputThumb, recordedInputs } from "../image-inputs.js";
import { RERUN_KEY } from "./generate.js";
import { linkRow } from "./shares.js";

const PAGE_SIZE = 24; // images per request; "#/gallery?limit=N" overrides it (1-100)
const VIEW_KEY = "promptcanvas.galleryView";

export async function render(container, { query }) {
  const pageSize = Math.min(100, Math.max(1, Number.parseInt(query.limit, 10) || PAGE_SIZE));
  let view = localStorage.getItem(VIEW_KEY) === "list" ? "list" : "grid";
  let collection = query.collection || "";
  let cursor = null;
  let done = false;
  let loading = false;
  let generation = 0; // bumps when the filter changes, so late pages of the old filter are dropped
  const images = [];
  const selected = new Set();

  const collectionSelect = h("select", { id: "gallery-collection", name: "collection" }, h("option", { value: "", text: "All images" }));
  const gridBtn = h("button", { type: "button", class: "btn btn-small", "aria-pressed": String(view === "grid"), text: "Grid" });
  const listBtn = h("button", { type: "button", class: "btn btn-small", "aria-pressed": String(view === "list"), text: "List" });
  const list = h("ul", { class: `image-grid${view === "list" ? " list-view" : ""}`, "aria-label": "Your images" });
  const status = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  const moreBtn = h("button", { type: "button", class: "btn", text: "Load more" });
  const moreBox = h("div", { class: "load-more" });
  const selCount = h("strong", { text: "" });
  const download = archiveDownload({
    request: () => ({ path: "/v1/archives", json: { image_ids: [...selected] } }),
    filename: (format) => `promptcanvas-images${format === "imagefolder" ? "-imagefolder" : ""}.zip`,
    small: true,
  });
  const deleteBtn = h("button", { type: "button", class: "btn btn-danger btn-small", text: "Delete" });
  const clearBtn = h("button", { type: "button", class: "btn btn-ghost btn-small", text: "Clear selection" });
  const selectAllBtn = h("button", { type: "button", class: "btn btn-ghost btn-small", text: "Select all loaded" });
  const shareCollectionBtn = h("button", { type: "button", class: "btn btn-small", text: "Share collection", hidden: !collection });
  const collectionShareBox = h("div", { class: "share-box", "aria-live": "polite" });
  shareCollectionBtn.addEventListener("click", async () => {
    shareCollectionBtn.disabled = true;
    try {
      const link = await post(`/v1/collections/${encodeURIComponent(collection)}/shares`, {});
      mount(collectionShareBox, linkRow(link.url, `Share link to collection ${collection}`));
      announce("Share link created");
    } catch (err) {
      showError(err, "Could not share the collection");
    } finally {
      shareCollectionBtn.disabled = false;
    }
  });
  const selectionBar = h("div", { class: "selection-bar", role: "region", "aria-label": "Selection", hidden: true }, selCount, selectAllBtn, clearBtn, download.element, deleteBtn);

  function setView(next) {
    view = next;
    localStorage.setItem(VIEW_KEY, view);
    gridBtn.setAttribute("aria-pressed", String(view === "grid"));
    listBtn.setAttribute("aria-pressed", String(view === "list"));
    list.classList.toggle("list-view", view === "list");
  }
  gridBtn.addEventListener("click", () => setView("grid"));
  listBtn.addEventListener("click", () => setView("list"));

  function updateSelection() {
    selCount.textContent = `${plural(selected.size, "image")} selected`;
    selectionBar.hidden = selected.size === 0;
    for (const li of list.children) {
      const on = selected.has(li.dataset.id);
      li.classList.toggle("selected", on);
      const box = li.querySelector("input[type=checkbox]");
      if (box) box.checked = on;
    }
  }

  function tile(image) {
    const boxId = uid("sel");
    const box = h("input", { type: "checkbox", id: boxId, "aria-label": `Select image: ${image.prompt}` });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(image.id);
      else selected.delete(image.id);
      updateSelection();
    });
    const open = h(
      "button",
      { type: "button", class: "tile-open", "aria-label": `Open image: ${image.prompt}` },
      h("img", {
        src: image.thumbnail_url || image.url,
        alt: image.prompt,
        loading: "lazy",
        decoding: "async",
        width: 256,
        height: Math.round((256 * image.height) / image.width) || 256,
      }),
    );
    open.addEventListener("click", () => openLightbox(images, images.indexOf(image), { onDelete: removeImage }));
    return h(
      "li",
      { class: "tile", dataset: { id: image.id } },
      open,
      h(
        "div",
        { class: "tile-body" },
        h("p", { class: "tile-caption", title: image.prompt, text: image.prompt }),
        h(
          "div",
          { class: "tile-details" },
          h("span", { text: shortModel(image.model) }),
          h("span", { text: `${image.width}×${image.height}` }),
          h("span", { text: `seed ${image.seed}` }),
          image.collection ? h("span", { text: image.collection }) : null,
          h("span", { text: formatDate(image.created_at) }),
        ),
      ),
      h("div", { class: "tile-select" }, box),
    );
  }

  function removeImage(id) {
    const index = images.findIndex((x) => x.id === id);
    if (index >= 0) images.splice(index, 1);
    selected.delete(id);
    const li = [...list.children].find((x) => x.dataset.id === id);
    if (li) li.remove();
    updateSelection();
    if (!images.length && done) showEmpty();
  }

  function showEmpty() {
    mount(
      moreBox,
      emptyState(
        collection ? `No images in “${collection}”` : "No images yet",
        collection ? "Pick another collection, or run a batch into this one." : "Images you generate are kept here.",
        h("a", { class: "btn btn-primary", href: "#/generate", text: "Generate an image" }),
      ),
    );
  }

  async function loadMore() {
    if (loading || done) return;
    loading = true;
    const gen = generation;
    list.setAttribute("aria-busy", "true");
    mount(moreBox, loadingBox(images.length ? "Loading more…" : "Loading your images…"));
    try {
      const page = await get("/v1/images", { limit: pageSize, cursor, collection });
      if (gen !== generation) return;
      const fresh = (page.images || []).filter((img) => !images.some((x) => x.id === img.id));
      images.push(...fresh);
      list.append(...fresh.map(tile));
      cursor = page.next_cursor || null;
      done = !cursor;
      status.textContent = `${plural(images.length, "image")} shown${done ? "" : "; more load as you scroll"}.`;
      if (!images.length && done) showEmpty();
      else mount(moreBox, done ? h("p", { class: "hint", text: `That's all: ${plural(images.length, "image")}.` }) : moreBtn);
    } catch (err) {
      if (gen !== generation) return;
      mount(moreBox, errorBox(err, { retry: loadMore }));
    } finally {
      if (gen === generation) {
        loading = false;
        list.removeAttribute("aria-busy");
        // Keep filling while the sentinel is still on screen.
        if (!done && isVisible(sentinel)) setTimeout(loadMore, 0);
      }
    }
  }
  moreBtn.addEventListener("click", loadMore);

  function reset() {
    generation += 1;
    loading = false;
    cursor = null;
    done = false;
    images.length = 0;
    selected.clear();
    list.replaceChildren();
    updateSelection();
    loadMore();
  }

  collectionSelect.addEventListener("change", () => {
    collection = collectionSelect.value;
    shareCollectionBtn.hidden = !collection;
    collectionShareBox.replaceChildren();
    history.replaceState(null, "", collection ? `#/gallery?collection=${encodeURIComponent(collection)}` : "#/gallery");
    reset();
  });

  selectAllBtn.addEventListener("click", () => {
    for (const img of images) selected.add(img.id);
    updateSelection();
  });
  clearBtn.addEventListener("click", () => {
    selected.clear();
    updateSelection();
  });
  deleteBtn.addEventListener("click", async () => {
    const ids = [...selected];
    const ok = await confirmDialog(`Delete ${plural(ids.length, "image")}? This cannot be undone.`, {
      title: "Delete images?",
      confirmLabel: "Delete",
      danger: true,
    });
    if (!ok) return;
    deleteBtn.disabled = true;
    let deleted = 0;
    const failures = [];
    for (const id of ids) {
      try {
        await del(`/v1/images/${encodeURIComponent(id)}`);
        removeImage(id);
        deleted += 1;
      } catch (err) {
        failures.push(err);
      }
    }
    deleteBtn.disabled = false;
    if (deleted) toast(`Deleted ${plural(deleted, "image")}.`, { kind: "success" });
    if (failures.length) showError(failures[0], `${plural(failures.length, "image")} could not be deleted`);
  });

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: "300px 0px" });

  mount(
    container,
    h(
      "div",
      { class: "screen-head" },
      h("h1", { id: "gallery-title", text: "Gallery" }),
      h("p", { class: "lede", text: "Your private images. Select several to download a ZIP or delete them." }),
    ),
    h(
      "div",
      { class: "toolbar gallery-toolbar" },
      h("div", { class: "field" }, h("label", { for: "gallery-collection", text: "Collection" }), collectionSelect),
      shareCollectionBtn,
      h("div", { class: "spacer" }),
      h("div", { class: "actions", role: "group", "aria-label": "View" }, gridBtn, listBtn),
    ),
    collectionShareBox,
    selectionBar,
    list,
    sentinel,
    moreBox,
    status,
  );
  loadCollections(collectionSelect, collection);
  reset();
  observer.observe(sentinel);

  return () => observer.disconnect();
}

function isVisible(el) {
  const rect = el.getBoundingClientRect();
  return rect.top < window.innerHeight + 300;
}

async function loadCollections(select, current) {
  try {
    const data = await get("/v1/collections");
    const names = (data.collections || []).map((c) => (typeof c === "string" ? { name: c } : c)).filter((c) => c.name);
    if (current && !names.some((c) => c.name === current)) names.unshift({ name: current });
    select.append(...names.map((c) => h("option", { value: c.name, text: c.image_count != null ? `${c.name} (${c.image_count})` : c.name })));
    select.value = current || "";
  } catch (err) {
    showError(err, "Collections could not be loaded");
  }
}

/**
 * The lightbox: one image large, with prompt, parameters and seed; re-run, download, delete.
 * Left/right arrow keys move through `list`; Esc closes.
 */
export function openLightbox(list, index, { onDelete } = {}) {
  if (index < 0 || !list[index]) return;
  const titleId = uid("lb");
  const dialog = h("dialog", { class: "lightbox", "aria-labelledby": titleId });
  let current = index;

  function show() {
    const img = list[current];
    if (!img.download_url && !img.hydrating) hydrate(img, current);
    const prev = h("button", { type: "button", class: "lightbox-nav lightbox-prev", "aria-label": "Previous image", text: "‹", disabled: current === 0 });
    const next = h("button", { type: "button", class: "lightbox-nav lightbox-next", "aria-label": "Next image", text: "›", disabled: current >= list.length - 1 });
    prev.addEventListener("click", () => move(-1));
    next.addEventListener("click", () => move(1));
    const rows = [
      ["Model", shortModel(img.model)],
      ["Size", `${img.width}×${img.height}`],
      ["Steps", img.steps ?? "default"],
      ["Seed", img.seed],
      ["Guidance", img.guidance ?? "default"],
      ["Cost", img.cost_usd === null || img.cost_usd === undefined ? "—" : formatUsd(img.cost_usd)],
      ["Negative prompt", img.negative_prompt || "—"],
      ["Collection", img.collection || "—"],
      ["Created", formatDate(img.created_at)],
    ];
    const rerun = h("button", { type: "button", class: "btn btn-primary", text: "Re-run" });
    rerun.addEventListener("click", () => {
      sessionStorage.setItem(RERUN_KEY, JSON.stringify(img));
      dialog.close();
      location.hash = "#/generate";
    });
    // Image to image: what it was made from, beside the details.
    const madeFrom = h("div", { class: "made-from", "aria-label": "Input images" });
    const given = recordedInputs(img.inputs);
    if (given.length) {
      mount(madeFrom, h("p", { class: "hint", text: "Made from" }));
      Promise.all(given.map(inputPreview)).then((found) => {
        madeFrom.append(h("div", { class: "pair-inputs" }, found.filter(Boolean).map((x, i) => inputThumb(x, i === 0 && img.inputs.image ? "Input" : "Reference"))));
      });
    }
    const editBtn = h("button", { type: "button", class: "btn", text: "Edit this image" });
    editBtn.addEventListener("click", () => {
      dialog.close();
      editOnGenerate(imageInput(img));
    });
    const shareBox = h("div", { class: "share-box", "aria-live": "polite" });
    const shareBtn = h("button", { type: "button", class: "btn", text: "Share" });
    shareBtn.addEventListener("click", async () => {
      shareBtn.disabled = true;
      try {
        const link = await post(`/v1/images/${encodeURIComponent(img.id)}/shares`, {});
        mount(
          shareBox,
          h("p", { class: "hint", text: `Anyone with this link can view the image and its prompt until ${formatDate(link.expires_at)}.` }),
          linkRow(link.url, "Share link"),
          h("p", { class: "hint" }, h("a", { href: "#/shares", text: "Manage your share links" })),
        );
        shareBox.querySelector("input").focus();
        announce("Share link created");
      } catch (err) {
        showError(err, "Could not create a share link");
      } finally {
        shareBtn.disabled = false;
      }
    });
    const remove = h("button", { type: "button", class: "btn btn-danger", text: "Delete" });
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog("Delete this image? This cannot be undone.", { title: "Delete image?", confirmLabel: "Delete", danger: true });
      if (!ok) return;
      remove.disabled = true;
      try {
        await del(`/v1/images/${encodeURIComponent(img.id)}`);
        toast("Image deleted.", { kind: "success" });
        announce("Image deleted");
        dialog.close();
        if (onDelete) onDelete(img.id);
      } catch (err) {
        remove.disabled = false;
        showError(err, "Could not delete the image");
      }
    });
    const close = h("button", { type: "button", class: "btn btn-small lightbox-close", text: "Close", "aria-label": "Close" });
    close.addEventListener("click", () => dialog.close());
    mount(
      dialog,
      h(
        "div",
        { class: "lightbox-body" },
        h("div", { class: "lightbox-media" }, h("img", { src: img.url, alt: img.prompt, width: img.width, height: img.height }), list.length > 1 ? [prev, next] : null),
        h(
          "div",
          { class: "lightbox-info" },
          close,
          h("h2", { id: titleId, class: "visually-hidden", text: "Image details" }),
          h("p", { class: "prompt-text", text: img.prompt }),
          h("dl", { class: "params-table" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", { class: k === "Seed" ? "mono" : null, text: String(v) })])),
          madeFrom,
          h(
            "div",
            { class: "actions" },
            rerun,
            editBtn,
            shareBtn,
            h("a", { class: "btn", href: `#/videos?image=${encodeURIComponent(img.id)}`, onclick: () => dialog.close(), text: "Animate" }),
            h("a", { class: "btn", href: img.download_url || img.url, download: "", text: "Download" }),
            remove,
          ),
          shareBox,
          list.length > 1 ? h("p", { class: "hint", text: `${current + 1} of ${list.length} · ← → to browse` }) : null,
        ),
      ),
    );
  }

  // Job items carry only {id, url, thumbnail_url, seed}: fetch the full image for download and details.
  async function hydrate(img, at) {
    img.hydrating = true;
    try {
      Object.assign(img, await get(`/v1/images/${encodeURIComponent(img.id)}`));
      if (dialog.open && current === at) show();
    } catch (err) {
      showError(err, "Could not load the image details");
    }
  }

  function move(delta) {
    const target = current + delta;
    if (target < 0 || target >= list.length) return;
    current = target;
    show();
    dialog.querySelector(delta < 0 ? ".lightbox-prev" : ".lightbox-next")?.focus();
  }

  dialog.addEventListener("keydown", (event) => {
    if (event.target.closest && event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowLeft") move(-1);
    else if (event.key === "ArrowRight") move(1);
  });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  show();
  dialog.showModal();
  dialog.querySelector(".lightbox-close").focus();
}
