// Image inputs of a generation: the image to edit ("Edit this image" on any result or upload) and the
// reference picker for multi-reference models (at most the model's `image_inputs.reference_images`
// from GET /v1/models). An input is {id, source: "upload" | "image", url, label}.

import { get } from "./api.js";
import { h, mount, uid } from "./ui.js";

/** sessionStorage key of an image handed to the Generate screen to edit. */
export const EDIT_KEY = "promptcanvas.edit";
const PAGE_LIMIT = 100; // GET /v1/uploads?limit= maximum

/** An upload (GET /v1/uploads) as an input. */
export function uploadInput(upload) {
  return { id: upload.id, source: "upload", url: upload.thumbnail_url || upload.url, label: upload.filename || upload.id };
}

/** A generated image (GET /v1/images, POST /v1/images) as an input. */
export function imageInput(image) {
  return { id: image.id, source: "image", url: image.thumbnail_url || image.url, label: image.prompt || image.id };
}

/** Open the Generate screen with `input` as the image to edit. */
export function editOnGenerate(input) {
  sessionStorage.setItem(EDIT_KEY, JSON.stringify(input));
  location.hash = "#/generate";
}

/** The image handed over by editOnGenerate (once), or null. */
export function takeEditHandoff() {
  const raw = sessionStorage.getItem(EDIT_KEY);
  sessionStorage.removeItem(EDIT_KEY);
  try {
    const input = raw ? JSON.parse(raw) : null;
    return input && typeof input.id === "string" ? input : null;
  } catch {
    return null;
  }
}

/** The user's ready image uploads (newest first), in `collection` when given, at most `max`. */
export async function readyUploads({ collection = "", max = 1000, signal } = {}) {
  const found = [];
  let cursor = null;
  do {
    const page = await get("/v1/uploads", { collection, cursor, limit: PAGE_LIMIT }, { signal });
    found.push(...(page.uploads || []).filter((u) => u.kind === "image" && u.status === "ready"));
    cursor = page.next_cursor;
  } while (cursor && found.length < max);
  return found.slice(0, max);
}

const previews = new Map(); // "source:id" -> Promise<input | null>

/**
 * The input (with a fresh thumbnail URL) that a recorded input {id, source} names, fetched once per
 * page load (GET /v1/uploads/{id} or GET /v1/images/{id}); null when it is gone.
 */
export function inputPreview(ref) {
  const key = `${ref.source}:${ref.id}`;
  if (!previews.has(key)) {
    const path = ref.source === "image" ? "/v1/images/" : "/v1/uploads/";
    previews.set(
      key,
      get(path + encodeURIComponent(ref.id))
        .then((found) => (ref.source === "image" ? imageInput(found) : uploadInput(found)))
        .catch(() => null),
    );
  }
  return previews.get(key);
}

/** The recorded inputs of an image or job item ({image?, references?}) as a list of {id, source}. */
export function recordedInputs(inputs) {
  if (!inputs || typeof inputs !== "object") return [];
  return [inputs.image, ...(inputs.references || [])].filter((x) => x && typeof x.id === "string");
}

/** A model's image inputs from the catalog: {imageUrl: bool, maxReferences: number}. */
export function modelInputs(spec) {
  const inputs = (spec && spec.image_inputs) || {};
  return { imageUrl: Boolean(inputs.image_url), maxReferences: Number(inputs.reference_images || 0) };
}

/** A small labelled thumbnail of an input. */
export function inputThumb(input, caption) {
  return h(
    "figure",
    { class: "input-thumb", dataset: { id: input.id } },
    h("img", { src: input.url, alt: input.label, width: 96, height: 96, loading: "lazy" }),
    h("figcaption", { text: caption || input.label }),
  );
}

/**
 * A checkbox grid of the user's ready uploads; at most `max` may be checked.
 * @returns {{element: HTMLElement, load: () => Promise<void>, chosen: () => object[], setMax: (n: number) => void,
 *            onChange: (fn: Function) => void, clear: () => void}}
 */
export function uploadChooser({ label = "Reference images", max = 1 } = {}) {
  let limit = max;
  const listeners = [];
  const grid = h("ul", { class: "chooser-grid", "aria-label": label });
  const status = h("p", { class: "hint", role: "status", "aria-live": "polite" });
  const element = h("div", { class: "chooser" }, status, grid);
  const inputs = new Map(); // upload id -> {input, box}

  function refresh() {
    const checked = [...inputs.values()].filter((x) => x.box.checked);
    for (const x of inputs.values()) x.box.disabled = !x.box.checked && checked.length >= limit;
    status.textContent = inputs.size
      ? `${checked.length} of at most ${limit} chosen`
      : "No ready uploads yet: add some on the Images tab.";
    for (const fn of listeners) fn();
  }

  return {
    element,
    async load() {
      status.textContent = "Loading your uploads…";
      const uploads = await readyUploads({ max: 200 });
      inputs.clear();
      mount(
        grid,
        uploads.map((u) => {
          const input = uploadInput(u);
          const id = uid("ref");
          const box = h("input", { type: "checkbox", id, value: u.id, name: "reference" });
          box.addEventListener("change", refresh);
          inputs.set(u.id, { input, box });
          return h("li", {}, box, h("label", { for: id }, h("img", { src: input.url, alt: "", width: 64, height: 64, loading: "lazy" }), h("span", { text: input.label })));
        }),
      );
      refresh();
    },
    chosen: () => [...inputs.values()].filter((x) => x.box.checked).map((x) => x.input),
    setMax(n) {
      limit = n;
      for (const x of [...inputs.values()].filter((y) => y.box.checked).slice(n)) x.box.checked = false;
      refresh();
    },
    onChange: (fn) => listeners.push(fn),
    clear() {
      for (const x of inputs.values()) x.box.checked = false;
      refresh();
    },
  };
}

/**
 * The Generate screen's inputs: the image to edit and the reference picker, shown as the model allows.
 * @param {{setModel: (id: string) => void, catalog: object}} options
 */
export function inputPicker({ catalog, setModel }) {
  let edit = null;
  let spec = null;
  const editSlot = h("div", { class: "edit-slot" });
  const warning = h("p", { class: "hint field-error", role: "alert", hidden: true });
  const chooser = uploadChooser({ label: "Reference images" });
  const refsTitle = h("legend", { text: "Reference images" });
  const loadRefs = h("button", { type: "button", class: "btn btn-small", text: "Choose from your uploads" });
  const refsBox = h("fieldset", { class: "references", hidden: true }, refsTitle, loadRefs, chooser.element);
  const element = h("section", { class: "image-inputs", "aria-label": "Input images" }, editSlot, warning, refsBox);
  let loaded = false;

  loadRefs.addEventListener("click", async () => {
    loadRefs.disabled = true;
    try {
      await chooser.load();
      loaded = true;
      loadRefs.hidden = true;
    } finally {
      loadRefs.disabled = false;
    }
  });

  function editModels() {
    return (catalog.models || []).filter((m) => modelInputs(m).imageUrl);
  }

  function render() {
    const m = modelInputs(spec);
    if (edit) {
      const remove = h("button", { type: "button", class: "btn btn-small btn-ghost", text: "Stop editing" });
      remove.addEventListener("click", () => {
        edit = null;
        render();
      });
      mount(editSlot, h("div", { class: "edit-current" }, inputThumb(edit, `Editing: ${edit.label}`), remove));
    } else {
      mount(editSlot);
    }
    warning.hidden = !(edit && !m.imageUrl);
    if (!warning.hidden) {
      const names = editModels().map((x) => x.name).join(", ");
      warning.textContent = `${spec.name} cannot edit an image. Choose a model that can: ${names}.`;
    }
    refsBox.hidden = m.maxReferences === 0;
    refsTitle.textContent = `Reference images (up to ${m.maxReferences})`;
    chooser.setMax(m.maxReferences);
  }

  return {
    element,
    /** The model changed (its catalog entry). */
    applyModel(next) {
      spec = next;
      render();
    },
    /** Edit `input` (an upload or image); switches to a model that can edit when the current one cannot. */
    setEdit(input) {
      edit = input;
      if (!modelInputs(spec).imageUrl && editModels()[0]) setModel(editModels()[0].id);
      render();
    },
    /** The image being edited, or null. */
    edit: () => edit,
    /** The request fields: image_id and reference_image_ids, as the model takes them. */
    values() {
      const m = modelInputs(spec);
      const out = {};
      if (edit && m.imageUrl) out.image_id = edit.id;
      const refs = loaded && m.maxReferences ? chooser.chosen().map((x) => x.id) : [];
      if (refs.length) out.reference_image_ids = refs;
      return out;
    },
    /** The inputs sent with the last values(), for showing beside the result. */
    shown() {
      const m = modelInputs(spec);
      return [...(edit && m.imageUrl ? [edit] : []), ...(loaded && m.maxReferences ? chooser.chosen() : [])];
    },
    /** A client-side check: an edit the model cannot take. Returns a message or null. */
    problem() {
      return edit && !modelInputs(spec).imageUrl ? warning.textContent : null;
    },
  };
}
