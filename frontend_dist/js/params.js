// The generation parameters form, shared by the Generate and Batch screens. Built from GET /v1/models:
// the model picker lists the catalog, and only the parameters the chosen model takes are shown
// (each model's `parameters`); ranges, sizes, defaults and the price come from its entry.

import { field, h, setFieldError } from "./ui.js";

const NUMBER_LIMIT = 4294967295;

/** What one image costs, USD: megapixels × price per MP × steps / default steps (Together's formula). */
export function imagePrice(model, width, height, steps) {
  if (!model || !model.price_per_mp) return null;
  let cost = ((width * height) / 1e6) * model.price_per_mp;
  if (model.steps && model.steps.default && steps) cost *= steps / model.steps.default;
  return cost;
}

/** "$0.0028" for small amounts, "$1.23" from a dollar up. */
export function formatUsd(value) {
  if (value === null || value === undefined) return "—";
  return value >= 1 ? `$${value.toFixed(2)}` : `$${value.toPrecision(2)}`;
}

/**
 * @param {{models: object[], default: string}} catalog  the body of GET /v1/models
 * @param {{seed?: boolean, idPrefix?: string}} options
 * @returns {{element, values(): object, set(values): void, showError(field, message): boolean, clearErrors(), validate(), fields, seedInput}}
 */
export function paramsForm(catalog, { seed: withSeed = true, idPrefix = "p" } = {}) {
  const models = catalog.models || [];
  const modelSelect = h(
    "select",
    { name: "model" },
    models.map((m) =>
      h("option", { value: m.id, text: m.available === false ? `${m.name} (unavailable)` : m.name, disabled: m.available === false }),
    ),
  );
  modelSelect.value = catalog.default || (models[0] && models[0].id);
  const sizeSelect = h("select", { name: "size" });
  const aspectSelect = h("select", { name: "aspect_ratio" });
  const stepsInput = h("input", { type: "number", name: "steps", inputmode: "numeric", step: 1 });
  const seedInput = h("input", {
    type: "number",
    name: "seed",
    inputmode: "numeric",
    min: 0,
    max: NUMBER_LIMIT,
    step: 1,
    placeholder: "Random",
  });
  const negativeInput = h("textarea", { name: "negative_prompt", rows: 2, maxlength: 2000, placeholder: "What to avoid, e.g. blurry, text, watermark" });
  const guidanceInput = h("input", { type: "number", name: "guidance", min: 0, max: 20, step: 0.5, inputmode: "decimal", placeholder: "Model default" });
  const upsamplingSelect = h(
    "select",
    { name: "prompt_upsampling" },
    h("option", { value: "", text: "Model default" }),
    h("option", { value: "true", text: "On" }),
    h("option", { value: "false", text: "Off" }),
  );
  const formatSelect = h(
    "select",
    { name: "output_format" },
    h("option", { value: "", text: "Model default" }),
    h("option", { value: "jpeg", text: "JPEG" }),
    h("option", { value: "png", text: "PNG" }),
  );

  const fields = {
    model: field("Model", modelSelect, { id: `${idPrefix}-model` }),
    size: field("Size", sizeSelect, { id: `${idPrefix}-size` }),
    aspect_ratio: field("Aspect ratio", aspectSelect, { id: `${idPrefix}-aspect`, hint: "Lets the model pick the exact size." }),
    steps: field("Steps", stepsInput, { id: `${idPrefix}-steps` }),
    seed: withSeed ? field("Seed", seedInput, { id: `${idPrefix}-seed`, hint: "Empty for a random seed." }) : null,
    guidance: field("Guidance", guidanceInput, { id: `${idPrefix}-guidance`, hint: "0–20; empty for the model's default." }),
    prompt_upsampling: field("Prompt upsampling", upsamplingSelect, { id: `${idPrefix}-upsampling` }),
    output_format: field("Output format", formatSelect, { id: `${idPrefix}-format` }),
    negative_prompt: field("Negative prompt", negativeInput, { id: `${idPrefix}-negative` }),
  };
  // width/height errors land on the size field
  fields.width = fields.size;
  fields.height = fields.size;
  /** Request field -> the form field that carries it; a model that does not take it hides it. */
  const OPTIONAL = ["aspect_ratio", "steps", "guidance", "prompt_upsampling", "output_format", "negative_prompt"];
  const description = h("p", { class: "hint model-description", "aria-live": "polite" });
  const price = h("p", { class: "hint model-price", "aria-live": "polite" });

  function spec() {
    return models.find((m) => m.id === modelSelect.value) || models[0];
  }

  function takes(name) {
    const m = spec();
    return Boolean(m && (m.parameters || []).includes(name));
  }

  function currentSize() {
    const [w, hgt] = (sizeSelect.value || "1024x1024").split("x").map(Number);
    const m = spec();
    if (aspectSelect.value && takes("aspect_ratio")) {
      const s = (m.sizes || []).find((x) => x.aspect_ratio === aspectSelect.value);
      if (s) return [s.width, s.height];
    }
    return [w, hgt];
  }

  /** One image at the chosen model, size and steps, USD (null: unknown). */
  function currentPrice() {
    const m = spec();
    const [w, hgt] = currentSize();
    const steps = takes("steps") && stepsInput.value !== "" ? Number(stepsInput.value) : m && m.steps && m.steps.default;
    return imagePrice(m, w, hgt, steps);
  }

  function updatePrice() {
    const m = spec();
    if (!m) return;
    const cost = currentPrice();
    price.textContent = cost === null ? "" : `About ${formatUsd(cost)} per image (${formatUsd(m.price_per_mp)} per megapixel).`;
  }

  function applyModel() {
    const m = spec();
    if (!m) return;
    const previousSize = sizeSelect.value || `${m.default_size.width}x${m.default_size.height}`;
    sizeSelect.replaceChildren(
      ...(m.sizes || []).map((s) => h("option", { value: `${s.width}x${s.height}`, text: `${s.aspect_ratio} · ${s.width}×${s.height}` })),
    );
    sizeSelect.value = (m.sizes || []).some((s) => `${s.width}x${s.height}` === previousSize)
      ? previousSize
      : `${m.default_size.width}x${m.default_size.height}`;
    const previousAspect = aspectSelect.value;
    aspectSelect.replaceChildren(
      h("option", { value: "", text: "Use the size" }),
      ...(m.aspect_ratios || []).map((r) => h("option", { value: r, text: r })),
    );
    aspectSelect.value = (m.aspect_ratios || []).includes(previousAspect) ? previousAspect : "";
    if (m.steps) {
      stepsInput.min = m.steps.min;
      stepsInput.max = m.steps.max;
      stepsInput.value = m.steps.default ?? "";
      stepsInput.placeholder = m.steps.default ? "" : "Model default";
      stepsInput.title = `${m.steps.min}–${m.steps.max}`;
    }
    for (const name of OPTIONAL) {
      fields[name].wrap.hidden = !takes(name);
    }
    sizeSelect.disabled = Boolean(aspectSelect.value) && takes("aspect_ratio");
    const stepsText = m.steps ? ` Steps ${m.steps.min}–${m.steps.max}${m.steps.default ? `, default ${m.steps.default}` : ""}.` : "";
    description.textContent = `${m.description || ""}${stepsText}`;
    updatePrice();
  }
  modelSelect.addEventListener("change", applyModel);
  aspectSelect.addEventListener("change", () => {
    sizeSelect.disabled = Boolean(aspectSelect.value);
    updatePrice();
  });
  sizeSelect.addEventListener("change", updatePrice);
  stepsInput.addEventListener("input", updatePrice);
  applyModel();

  const element = h(
    "div",
    { class: "params" },
    h("div", { class: "grid-2" }, fields.model.wrap, fields.size.wrap),
    description,
    h("div", { class: "grid-2" }, fields.aspect_ratio.wrap, fields.steps.wrap),
    h("div", { class: "grid-2" }, fields.seed ? fields.seed.wrap : null, fields.guidance.wrap),
    h("div", { class: "grid-2" }, fields.prompt_upsampling.wrap, fields.output_format.wrap),
    fields.negative_prompt.wrap,
    price,
  );

  return {
    element,
    fields,
    seedInput,
    /** The chosen model's catalog entry. */
    spec,
    /** Call `listener(spec)` whenever the model changes. */
    onModelChange(listener) {
      modelSelect.addEventListener("change", () => listener(spec()));
    },
    /** Choose the model `id` (when the catalog has it) and show its parameters. */
    setModel(id) {
      if (models.some((m) => m.id === id)) modelSelect.value = id;
      applyModel();
      modelSelect.dispatchEvent(new Event("change"));
    },
    /** The estimated price of one image at the chosen model, size and steps, USD (null: unknown). */
    price: currentPrice,
    /** Call `listener()` whenever the price of an image may have changed. */
    onPriceChange(listener) {
      for (const el of [modelSelect, sizeSelect, aspectSelect]) el.addEventListener("change", listener);
      stepsInput.addEventListener("input", listener);
    },
    /** The request fields: only those the chosen model takes. */
    values() {
      const out = { model: modelSelect.value };
      if (takes("aspect_ratio") && aspectSelect.value) out.aspect_ratio = aspectSelect.value;
      else [out.width, out.height] = currentSize();
      if (takes("steps") && stepsInput.value !== "") out.steps = Number(stepsInput.value);
      if (withSeed && seedInput.value !== "") out.seed = Number(seedInput.value);
      if (takes("negative_prompt") && negativeInput.value.trim()) out.negative_prompt = negativeInput.value.trim();
      if (takes("guidance") && guidanceInput.value !== "") out.guidance = Number(guidanceInput.value);
      if (takes("prompt_upsampling") && upsamplingSelect.value) out.prompt_upsampling = upsamplingSelect.value === "true";
      if (takes("output_format") && formatSelect.value) out.output_format = formatSelect.value;
      return out;
    },
    /** Fill from an image's parameters (re-run). */
    set(values) {
      if (values.model && models.some((m) => m.id === values.model)) modelSelect.value = values.model;
      applyModel();
      if (values.width && values.height) {
        const key = `${values.width}x${values.height}`;
        if ([...sizeSelect.options].some((o) => o.value === key)) sizeSelect.value = key;
      }
      if (values.aspect_ratio && takes("aspect_ratio")) aspectSelect.value = values.aspect_ratio;
      if (values.steps && takes("steps")) stepsInput.value = values.steps;
      if (withSeed && values.seed !== undefined && values.seed !== null) seedInput.value = values.seed;
      negativeInput.value = values.negative_prompt || "";
      guidanceInput.value = values.guidance ?? "";
      sizeSelect.disabled = Boolean(aspectSelect.value) && takes("aspect_ratio");
      updatePrice();
    },
    /** Put an API error on its field; returns whether a field took it. */
    showError(name, message) {
      const target = fields[name];
      if (!target || target.wrap.hidden) return false;
      setFieldError(target, message);
      target.input.focus();
      return true;
    },
    clearErrors() {
      for (const f of new Set(Object.values(fields))) if (f) setFieldError(f, "");
    },
    /** Basic client-side checks; returns the first error or null. */
    validate() {
      const m = spec();
      if (takes("steps") && stepsInput.value !== "") {
        const steps = Number(stepsInput.value);
        if (!Number.isInteger(steps) || steps < m.steps.min || steps > m.steps.max) {
          return ["steps", `Steps must be a whole number from ${m.steps.min} to ${m.steps.max}.`];
        }
      }
      if (withSeed && seedInput.value !== "") {
        const s = Number(seedInput.value);
        if (!Number.isInteger(s) || s < 0 || s > NUMBER_LIMIT) return ["seed", "Seed must be a whole number from 0 to 4294967295."];
      }
      if (takes("guidance") && guidanceInput.value !== "") {
        const g = Number(guidanceInput.value);
        if (!(g >= 0 && g <= 20)) return ["guidance", "Guidance must be between 0 and 20."];
      }
      return null;
    },
  };
}
