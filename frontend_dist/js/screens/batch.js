// Batch: paste prompts, upload a .txt/.csv/.tsv, one prompt × count, one prompt over a collection of
// uploaded images, or sets (a prompt and its reference images, n images each); a count and a cost
// estimate show before starting; then a job is queued and the job's live progress screen opens.

import { api, limits as apiLimits, models } from "../api.js";
import { modelInputs, readyUploads, uploadChooser } from "../image-inputs.js";
import { estimateLine } from "../estimate.js";
import { formatUsd, paramsForm } from "../params.js";
import { limits, parsePasted, parsePromptFile, setLimits } from "../prompts-file.js";
import { field, h, loadingBox, mount, plural, setFieldError, showError, toast, uid } from "../ui.js";

const COLLECTION_RE = /^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$/;

export async function render(container, { navigate }) {
  mount(container, h("h1", { id: "batch-title", text: "Batch" }), loadingBox("Loading models…"));
  const [catalog, serverLimits] = await Promise.all([models(), apiLimits().catch(() => null)]);
  if (serverLimits) setLimits(serverLimits);
  const MAX_PROMPTS = limits.maxPrompts;
  const params = paramsForm(catalog, { seed: false, idPrefix: "batch" });

  // Source picker (a segmented radio group).
  const sources = [
    ["paste", "Paste prompts"],
    ["file", "Upload file"],
    ["count", "One prompt × count"],
    ["collection", "One prompt over uploaded images"],
    ["sets", "Sets"],
  ];
  const group = uid("src");
  const sourceRadios = {};
  const segmented = h(
    "div",
    { class: "segmented", role: "radiogroup", "aria-label": "Prompt source" },
    sources.map(([value, label], i) => {
      const id = `${group}-${value}`;
      const radio = h("input", { type: "radio", name: group, id, value, checked: i === 0 });
      sourceRadios[value] = radio;
      return [radio, h("label", { for: id, text: label })];
    }),
  );

  const pasteInput = h("textarea", {
    name: "prompts",
    rows: 10,
    placeholder: "One prompt per line\na lighthouse at dawn, oil painting\na robot tending a vegetable garden",
    spellcheck: "true",
  });
  const paste = field("Prompts", pasteInput, { id: "batch-prompts", hint: `One prompt per line, up to ${MAX_PROMPTS}.` });

  const fileInput = h("input", {
    type: "file",
    name: "file",
    accept: ".txt,.csv,.tsv,text/plain,text/csv,text/tab-separated-values",
  });
  const file = field("Prompt file", fileInput, {
    id: "batch-file",
    hint: ".txt: one prompt per line. .csv/.tsv: a header row with a “prompt” column.",
  });

  const singleInput = h("textarea", { name: "prompt", rows: 3, maxlength: 2000, placeholder: "A single prompt to render several times" });
  const single = field("Prompt", singleInput, { id: "batch-single" });
  const countInput = h("input", { type: "number", name: "count", min: 1, max: MAX_PROMPTS, step: 1, value: 4, inputmode: "numeric" });
  const count = field("Count", countInput, { id: "batch-count", hint: `1–${MAX_PROMPTS} images, each with its own seed.` });

  // One prompt over every ready upload of a collection (automatic mode).
  const overPromptInput = h("textarea", { name: "over_prompt", rows: 3, maxlength: 2000, placeholder: "An edit to make to every image, e.g. put the product on a marble table" });
  const overPrompt = field("Prompt for every image", overPromptInput, { id: "batch-over-prompt" });
  const overCollectionInput = h("input", { type: "text", name: "collection_images", maxlength: 64, placeholder: "e.g. product-shots" });
  const overCollection = field("Images from", overCollectionInput, {
    id: "batch-over-collection",
    hint: "The name of a collection on the Images tab: every ready image in it gets the prompt.",
  });
  const overCount = h("p", { class: "hint over-count", role: "status", "aria-live": "polite" });
  let overImages = { collection: null, count: 0 };

  // Sets: each a prompt and its reference images, with n images per set (semi-automatic mode).
  const setsList = h("ol", { class: "sets-list", "aria-label": "Sets" });
  const addSetBtn = h("button", { type: "button", class: "btn btn-small", text: "Add a set" });
  const perSetInput = h("input", { type: "number", name: "n", min: 1, max: MAX_PROMPTS, step: 1, value: 4, inputmode: "numeric" });
  const perSet = field("Images per set", perSetInput, { id: "batch-per-set" });
  const sets = [];

  const panes = {
    paste: h("div", { class: "stack" }, paste.wrap),
    file: h("div", { class: "stack", hidden: true }, file.wrap),
    count: h("div", { class: "stack", hidden: true }, single.wrap, count.wrap),
    collection: h("div", { class: "stack", hidden: true }, overPrompt.wrap, overCollection.wrap, overCount),
    sets: h("div", { class: "stack", hidden: true }, setsList, addSetBtn, perSet.wrap),
  };

  function addSet() {
    const number = sets.length + 1;
    const promptInput = h("textarea", { name: `set_prompt_${number}`, rows: 2, maxlength: 2000, placeholder: "The prompt of this set" });
    const promptField = field(`Set ${number} prompt`, promptInput, { id: `batch-set-${number}-prompt` });
    const chooser = uploadChooser({ label: `Set ${number} reference images`, max: Math.max(1, modelInputs(params.spec()).maxReferences) });
    const entry = { promptInput, promptField, chooser };
    sets.push(entry);
    promptInput.addEventListener("input", recompute);
    chooser.onChange(recompute);
    setsList.append(h("li", { class: "set card-inset stack" }, promptField.wrap, h("p", { class: "hint", text: "Reference images" }), chooser.element));
    chooser.load().catch((err) => showError(err, "Your uploads could not be listed"));
    recompute();
  }
  addSetBtn.addEventListener("click", addSet);

  let overTimer = null;
  function countCollection() {
    clearTimeout(overTimer);
    const name = overCollectionInput.value.trim();
    if (!name) {
      overImages = { collection: null, count: 0 };
      overCount.textContent = "";
      recompute();
      return;
    }
    if (!COLLECTION_RE.test(name)) {
      setFieldError(overCollection, "1–64 characters: letters, digits, space, _ . - (starting with a letter or digit).");
      return;
    }
    setFieldError(overCollection, "");
    overCount.textContent = "Counting the collection's images…";
    overTimer = setTimeout(async () => {
      try {
        const found = await readyUploads({ collection: name, max: MAX_PROMPTS + 1 });
        if (overCollectionInput.value.trim() !== name) return;
        overImages = { collection: name, count: found.length };
        overCount.textContent =
          found.length > MAX_PROMPTS
            ? `More than ${MAX_PROMPTS} ready images: a job takes at most ${MAX_PROMPTS}.`
            : `${plural(found.length, "ready image")} in “${name}”.`;
      } catch (err) {
        overImages = { collection: null, count: 0 };
        overCount.textContent = `The collection could not be read: ${err.message}`;
      }
      recompute();
    }, 300);
  }

  const nameInput = h("input", { type: "text", name: "name", maxlength: 100, placeholder: "Optional, e.g. Spring campaign" });
  const name = field("Job name", nameInput, { id: "batch-name" });
  const collectionInput = h("input", { type: "text", name: "collection", maxlength: 64, placeholder: "e.g. spring-campaign", list: "batch-collections" });
  const collection = field("Collection", collectionInput, {
    id: "batch-collection",
    hint: "The images are filed under this name in the gallery. Letters, digits, space, _ . -",
  });
  const collectionList = h("datalist", { id: "batch-collections" });

  // Before submit: the prompt count and the file's validation errors.
  const summaryCount = h("span", { class: "count", text: "0" });
  const summaryText = h("span", { text: "prompts ready" });
  const summary = h("p", { class: "batch-summary", role: "status", "aria-live": "polite" }, summaryCount, " ", summaryText);
  const errorsTitleId = uid("errs");
  const errorList = h("ul", { class: "validation-list", "aria-labelledby": errorsTitleId });
  const errorsBox = h(
    "div",
    { class: "callout callout-error validation", role: "alert", hidden: true },
    h("div", {}, h("p", { id: errorsTitleId, text: "Fix these before submitting:" }), errorList),
  );
  const previewList = h("ol", { class: "preview-list", "aria-label": "First prompts" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-lg btn-block", text: "Start batch", disabled: true });

  const cost = h("p", { class: "batch-cost", "aria-live": "polite" });
  const estimate = estimateLine("batch-estimate");
  let state = { prompts: [], errors: [], fileObj: null };

  /** The JSON body this batch would be submitted with (a file's prompts as a list), or null. */
  function jsonBody() {
    if (!state.prompts.length || state.errors.length) return null;
    if (params.validate()) return null;
    if (source() === "count") return { prompt: singleInput.value.trim(), count: Number(countInput.value), ...params.values() };
    return { prompts: state.prompts.map((p) => p.prompt), ...params.values() };
  }

  function source() {
    return Object.entries(sourceRadios).find(([, r]) => r.checked)[0];
  }

  async function recompute() {
    const src = source();
    let result = { prompts: [], errors: [] };
    if (src === "paste") {
      result = parsePasted(pasteInput.value);
    } else if (src === "file") {
      const f = fileInput.files && fileInput.files[0];
      state.fileObj = f || null;
      if (f) {
        if (f.size > limits.maxFileBytes) {
          const kib = (n) => Math.round(n / 1024);
          result = { prompts: [], errors: [`The file is ${kib(f.size)} KiB; at most ${kib(limits.maxFileBytes)} KiB.`] };
        } else result = parsePromptFile(await f.text(), f.name);
      }
    } else if (src === "collection") {
      const text = overPromptInput.value.trim();
      const errors = [];
      if (text.length > 2000) errors.push("The prompt is longer than 2000 characters.");
      if (overImages.count > MAX_PROMPTS) errors.push(`The collection has more than ${MAX_PROMPTS} ready images.`);
      const n = text && overImages.collection === overCollectionInput.value.trim() ? Math.min(overImages.count, MAX_PROMPTS) : 0;
      result = { prompts: errors.length ? [] : Array.from({ length: n }, (_, i) => ({ line: i + 1, prompt: text })), errors };
    } else if (src === "sets") {
      const n = Number(perSetInput.value);
      const errors = [];
      if (!Number.isInteger(n) || n < 1) errors.push("Images per set must be a whole number of at least 1.");
      const filled = sets.filter((x) => x.promptInput.value.trim());
      sets.forEach((x, i) => {
        if (x.promptInput.value.trim() && !x.chooser.chosen().length) errors.push(`Set ${i + 1} has no reference image.`);
      });
      if (filled.length * n > MAX_PROMPTS) errors.push(`${filled.length * n} images: a job takes at most ${MAX_PROMPTS}.`);
      const prompts = [];
      if (!errors.length) for (const x of filled) for (let i = 0; i < n; i += 1) prompts.push({ line: prompts.length + 1, prompt: x.promptInput.value.trim() });
      result = { prompts, errors };
    } else {
      const text = singleInput.value.trim();
      const n = Number(countInput.value);
      const errors = [];
      if (!Number.isInteger(n) || n < 1 || n > MAX_PROMPTS) errors.push(`Count must be a whole number from 1 to ${MAX_PROMPTS}.`);
      if (text.length > 2000) errors.push("The prompt is longer than 2000 characters.");
      result = { prompts: text && !errors.length ? Array.from({ length: n }, (_, i) => ({ line: i + 1, prompt: text })) : [], errors };
    }
    const collectionValue = collectionInput.value.trim();
    if (collectionValue && !COLLECTION_RE.test(collectionValue)) {
      setFieldError(collection, "1–64 characters: letters, digits, space, _ . - (starting with a letter or digit).");
    } else {
      setFieldError(collection, "");
    }
    state = { ...state, prompts: result.prompts, errors: result.errors };
    const n = result.prompts.length;
    summaryCount.textContent = String(n);
    const unit = src === "collection" || src === "sets" ? "image" : "prompt";
    summaryText.textContent = `${n === 1 ? unit : `${unit}s`} ready`;
    errorList.replaceChildren(...result.errors.slice(0, 50).map((e) => h("li", { text: e })));
    if (result.errors.length > 50) errorList.append(h("li", { text: `…and ${result.errors.length - 50} more.` }));
    errorsBox.hidden = !result.errors.length;
    previewList.replaceChildren(...result.prompts.slice(0, 8).map((p) => h("li", { title: p.prompt, text: p.prompt })));
    if (n > 8) previewList.append(h("li", { class: "hint", text: `…${n - 8} more` }));
    const ok = n > 0 && !result.errors.length && !collection.input.getAttribute("aria-invalid");
    submit.disabled = !ok;
    submit.textContent = ok ? `Start batch · ${plural(n, "image")}` : "Start batch";
    const each = params.price();
    cost.textContent = n && each !== null ? `Estimated cost: ${formatUsd(n * each)} (${plural(n, "image")} × ${formatUsd(each)})` : "";
    estimate.update(ok ? jsonBody() : null);
  }

  for (const [value, radio] of Object.entries(sourceRadios)) {
    radio.addEventListener("change", () => {
      for (const [key, pane] of Object.entries(panes)) pane.hidden = key !== value;
      if (value === "sets" && !sets.length) addSet();
      recompute();
    });
  }
  pasteInput.addEventListener("input", recompute);
  fileInput.addEventListener("change", recompute);
  singleInput.addEventListener("input", recompute);
  countInput.addEventListener("input", recompute);
  collectionInput.addEventListener("input", recompute);
  overPromptInput.addEventListener("input", recompute);
  overCollectionInput.addEventListener("input", countCollection);
  perSetInput.addEventListener("input", recompute);
  params.onPriceChange(recompute);
  params.onModelChange((spec) => {
    for (const x of sets) x.chooser.setMax(Math.max(1, modelInputs(spec).maxReferences));
  });
  params.element.addEventListener("input", recompute);
  params.element.addEventListener("change", recompute);

  async function submitJob() {
    await recompute();
    if (submit.disabled) return;
    params.clearErrors();
    const invalid = params.validate();
    if (invalid) {
      params.showError(...invalid);
      return;
    }
    const src = source();
    const extra = {};
    if (nameInput.value.trim()) extra.name = nameInput.value.trim();
    if (collectionInput.value.trim()) extra.collection = collectionInput.value.trim();
    const options = { method: "POST" };
    if (src === "file") {
      const form = new FormData();
      form.append("file", state.fileObj, state.fileObj.name);
      for (const [key, value] of Object.entries({ ...params.values(), ...extra })) form.append(key, String(value));
      options.form = form;
    } else if (src === "collection") {
      options.json = { prompt: overPromptInput.value.trim(), collection_images: overCollectionInput.value.trim(), ...params.values(), ...extra };
    } else if (src === "sets") {
      const filled = sets.filter((x) => x.promptInput.value.trim());
      options.json = {
        sets: filled.map((x) => ({ prompt: x.promptInput.value.trim(), image_ids: x.chooser.chosen().map((i) => i.id) })),
        n: Number(perSetInput.value),
        ...params.values(),
        ...extra,
      };
    } else if (src === "count") {
      options.json = { prompt: singleInput.value.trim(), count: Number(countInput.value), ...params.values(), ...extra };
    } else {
      options.json = { prompts: state.prompts.map((p) => p.prompt), ...params.values(), ...extra };
    }
    submit.disabled = true;
    submit.textContent = "Submitting…";
    try {
      const job = await api("/v1/jobs", options);
      toast(`Batch queued: ${plural(job.total, "image")}.`, { kind: "success" });
      navigate(`#/jobs/${encodeURIComponent(job.job_id)}`);
    } catch (err) {
      const key = String(err.field || "").replace(/\[\d+\]$/, "");
      const promptTarget = { count: single, collection: overPrompt }[src] || paste;
      const target = { prompts: promptTarget, prompt: promptTarget, count, file, collection, name, collection_images: overCollection, n: perSet }[key];
      if (target) {
        setFieldError(target, err.message);
        target.input.focus();
      } else if (!params.showError(err.field, err.message)) {
        showError(err, "The batch was not created");
      }
      submit.disabled = false;
      submit.textContent = "Start batch";
    }
  }

  const form = h(
    "form",
    { class: "stack", novalidate: true, "aria-labelledby": "batch-title" },
    h("fieldset", {}, h("legend", { text: "Prompts" }), h("div", { class: "stack" }, segmented, panes.paste, panes.file, panes.count, panes.collection, panes.sets)),
    h("div", { class: "grid-2" }, collection.wrap, name.wrap),
    collectionList,
    h("fieldset", {}, h("legend", { text: "Generation settings" }), params.element),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitJob();
  });
  submit.setAttribute("form", (form.id = uid("batchform")));

  mount(
    container,
    h(
      "div",
      { class: "screen-head" },
      h("h1", { id: "batch-title", text: "Batch" }),
      h("p", { class: "lede", text: `Queue up to ${MAX_PROMPTS} images, from prompts or from your uploaded images; they appear as they finish.` }),
    ),
    h(
      "div",
      { class: "batch-layout" },
      h("div", { class: "card" }, form),
      h(
        "aside",
        { class: "card stack", "aria-label": "Batch summary" },
        h("h2", { class: "card-title", text: "Summary" }),
        summary,
        errorsBox,
        previewList,
        cost,
        estimate.element,
        submit,
        h("p", { class: "hint", text: "Each image counts against your monthly quota and budget, unless you saved your own Together key (Account)." }),
      ),
    ),
  );
  recompute();
  loadCollections(collectionList, collection.hint);
}

async function loadCollections(datalist, hint) {
  try {
    const data = await api("/v1/collections");
    const names = (data.collections || []).map((c) => (typeof c === "string" ? c : c.name)).filter(Boolean);
    datalist.replaceChildren(...names.map((n) => h("option", { value: n })));
  } catch (err) {
    // Suggestions only: typing a name still works, but say why there are none.
    hint.textContent = `${hint.textContent} (Your existing collections could not be listed: ${err.message})`;
  }
}
