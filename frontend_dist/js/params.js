// The generation parameters form (model, aspect preset, steps, seed, negative prompt, guidance scale),
// shared by the Generate and Batch screens. Ranges and defaults come from GET /v1/models.

import { field, h, setFieldError } from "./ui.js";

const PRESET_LABELS = {
  square: "Square",
  portrait: "Portrait 3:4",
  landscape: "Landscape 4:3",
  "16:9": "Wide 16:9",
  "9:16": "Tall 9:16",
};

/**
 * @param {{models: object[], default: string}} catalog
 * @param {{seed?: boolean}} options
 * @returns {{element, values(): object, set(values): void, showError(field, message): boolean, clearErrors(), fields}}
 */
export function paramsForm(catalog, { seed: withSeed = true, idPrefix = "p" } = {}) {
  const models = catalog.models || [];
  const modelSelect = h(
    "select",
    { name: "model" },
    models.map((m) => h("option", { value: m.id, text: m.name })),
  );
  modelSelect.value = catalog.default || (models[0] && models[0].id);
  const presetSelect = h("select", { name: "aspect_ratio" });
  const stepsInput = h("input", { type: "number", name: "steps", inputmode: "numeric", step: 1 });
  const seedInput = h("input", {
    type: "number",
    name: "seed",
    inputmode: "numeric",
    min: 0,
    max: 4294967295,
    step: 1,
    placeholder: "Random",
  });
  const negativeInput = h("textarea", { name: "negative_prompt", rows: 2, maxlength: 2000, placeholder: "What to avoid, e.g. blurry, text, watermark" });
  const guidanceInput = h("input", { type: "number", name: "guidance_scale", min: 0, max: 20, step: 0.5, inputmode: "decimal", placeholder: "Model default" });

  const fields = {
    model: field("Model", modelSelect, { id: `${idPrefix}-model` }),
    aspect_ratio: field("Aspect", presetSelect, { id: `${idPrefix}-aspect` }),
    steps: field("Steps", stepsInput, { id: `${idPrefix}-steps` }),
    seed: withSeed ? field("Seed", seedInput, { id: `${idPrefix}-seed`, hint: "Empty for a random seed." }) : null,
    negative_prompt: field("Negative prompt", negativeInput, { id: `${idPrefix}-negative` }),
    guidance_scale: field("Guidance scale", guidanceInput, { id: `${idPrefix}-guidance`, hint: "0–20; FLUX.1 [dev] honours it." }),
  };
  const description = h("p", { class: "hint model-description", "aria-live": "polite" });

  function spec() {
    return models.find((m) => m.id === modelSelect.value) || models[0];
  }

  function applyModel({ keepSteps = false } = {}) {
    const m = spec();
    if (!m) return;
    const previousPreset = presetSelect.value || "square";
    presetSelect.replaceChildren(
      ...Object.entries(m.presets || {}).map(([name, size]) =>
        h("option", { value: name, text: `${PRESET_LABELS[name] || name} · ${size.width}×${size.height}` }),
      ),
    );
    presetSelect.value = m.presets && m.presets[previousPreset] ? previousPreset : "square";
    stepsInput.min = m.steps.min;
    stepsInput.max = m.steps.max;
    const current = Number(stepsInput.value);
    if (!keepSteps || !current || current < m.steps.min || current > m.steps.max) stepsInput.value = m.steps.default;
    stepsInput.title = `${m.steps.min}–${m.steps.max}`;
    description.textContent = `${m.description || ""} Steps ${m.steps.min}–${m.steps.max}, default ${m.steps.default}.`;
    stepsInput.disabled = m.steps.min === m.steps.max;
  }
  modelSelect.addEventListener("change", () => applyModel());
  applyModel();

  const element = h(
    "div",
    { class: "params" },
    h("div", { class: "grid-2" }, fields.model.wrap, fields.aspect_ratio.wrap),
    description,
    h("div", { class: "grid-2" }, fields.steps.wrap, fields.seed ? fields.seed.wrap : fields.guidance_scale.wrap),
    fields.seed ? fields.guidance_scale.wrap : null,
    fields.negative_prompt.wrap,
  );

  return {
    element,
    fields,
    seedInput,
    values() {
      const out = { model: modelSelect.value, aspect_ratio: presetSelect.value };
      if (!stepsInput.disabled && stepsInput.value !== "") out.steps = Number(stepsInput.value);
      if (withSeed && seedInput.value !== "") out.seed = Number(seedInput.value);
      if (negativeInput.value.trim()) out.negative_prompt = negativeInput.value.trim();
      if (guidanceInput.value !== "") out.guidance_scale = Number(guidanceInput.value);
      return out;
    },
    /** Fill from an image's parameters (re-run). */
    set(values) {
      if (values.model && models.some((m) => m.id === values.model)) modelSelect.value = values.model;
      applyModel();
      if (values.width && values.height) {
        const m = spec();
        const match = Object.entries(m.presets || {}).find(([, s]) => s.width === values.width && s.height === values.height);
        if (match) presetSelect.value = match[0];
      }
      if (values.aspect_ratio && spec().presets[values.aspect_ratio]) presetSelect.value = values.aspect_ratio;
      if (values.steps) stepsInput.value = values.steps;
      if (withSeed && values.seed !== undefined && values.seed !== null) seedInput.value = values.seed;
      negativeInput.value = values.negative_prompt || "";
      guidanceInput.value = values.guidance_scale ?? "";
    },
    /** Put an API error on its field; returns whether a field took it. */
    showError(name, message) {
      const target = fields[name];
      if (!target) return false;
      setFieldError(target, message);
      target.input.focus();
      return true;
    },
    clearErrors() {
      for (const f of Object.values(fields)) if (f) setFieldError(f, "");
    },
    /** Basic client-side checks; returns the first error or null. */
    validate() {
      const m = spec();
      const steps = Number(stepsInput.value);
      if (!stepsInput.disabled && (!Number.isInteger(steps) || steps < m.steps.min || steps > m.steps.max)) {
        return ["steps", `Steps must be a whole number from ${m.steps.min} to ${m.steps.max}.`];
      }
      if (withSeed && seedInput.value !== "") {
        const s = Number(seedInput.value);
        if (!Number.isInteger(s) || s < 0 || s > 4294967295) return ["seed", "Seed must be a whole number from 0 to 4294967295."];
      }
      if (guidanceInput.value !== "") {
        const g = Number(guidanceInput.value);
        if (!(g >= 0 && g <= 20)) return ["guidance_scale", "Guidance scale must be between 0 and 20."];
      }
      return null;
    },
  };
}
