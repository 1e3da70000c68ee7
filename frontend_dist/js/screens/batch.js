// Batch: paste prompts, upload a .txt/.csv/.tsv, or one prompt × count; then a job is queued and the
// job's live progress screen opens.

import { api, limits as apiLimits, models } from "../api.js";
import { estimateLine } from "../estimate.js";
import { paramsForm } from "../params.js";
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

  const panes = {
    paste: h("div", { class: "stack" }, paste.wrap),
    file: h("div", { class: "stack", hidden: true }, file.wrap),
    count: h("div", { class: "stack", hidden: true }, single.wrap, count.wrap),
  };

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
    summaryText.textContent = n === 1 ? "prompt ready" : "prompts ready";
    errorList.replaceChildren(...result.errors.slice(0, 50).map((e) => h("li", { text: e })));
    if (result.errors.length > 50) errorList.append(h("li", { text: `…and ${result.errors.length - 50} more.` }));
    errorsBox.hidden = !result.errors.length;
    previewList.replaceChildren(...result.prompts.slice(0, 8).map((p) => h("li", { title: p.prompt, text: p.prompt })));
    if (n > 8) previewList.append(h("li", { class: "hint", text: `…${n - 8} more` }));
    const ok = n > 0 && !result.errors.length && !collection.input.getAttribute("aria-invalid");
    submit.disabled = !ok;
    submit.textContent = ok ? `Start batch · ${plural(n, "image")}` : "Start batch";
    estimate.update(ok ? jsonBody() : null);
  }

  for (const [value, radio] of Object.entries(sourceRadios)) {
    radio.addEventListener("change", () => {
      for (const [key, pane] of Object.entries(panes)) pane.hidden = key !== value;
      recompute();
    });
  }
  pasteInput.addEventListener("input", recompute);
  fileInput.addEventListener("change", recompute);
  singleInput.addEventListener("input", recompute);
  countInput.addEventListener("input", recompute);
  collectionInput.addEventListener("input", recompute);
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
      const target = { prompts: src === "count" ? single : paste, prompt: src === "count" ? single : paste, count, file, collection, name }[key];
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
    h("fieldset", {}, h("legend", { text: "Prompts" }), h("div", { class: "stack" }, segmented, panes.paste, panes.file, panes.count)),
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
      h("p", { class: "lede", text: "Queue up to 500 prompts; images appear as they finish." }),
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
