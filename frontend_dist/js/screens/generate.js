// Generate: prompt (with templates and recent prompts), parameters, and the result.

import { get, models, post } from "../api.js";
import { imageInput, inputPicker, inputThumb, takeEditHandoff } from "../image-inputs.js";
import { estimateLine } from "../estimate.js";
import { paramsForm } from "../params.js";
import { announce, errorBox, field, h, loadingBox, mount, setFieldError, shortModel, showError, toast } from "../ui.js";

export const RERUN_KEY = "promptcanvas.rerun";

const TEMPLATES = [
  { label: "Watercolor", text: "A soft watercolor painting of {subject}, loose brush strokes, paper texture" },
  { label: "Product photo", text: "Studio product photo of {subject} on a marble table, soft light, 50mm" },
  { label: "Cinematic", text: "Cinematic still of {subject}, golden hour, shallow depth of field, 35mm film" },
  { label: "Isometric 3D", text: "Isometric 3D render of {subject}, pastel colors, clean background" },
  { label: "Pixel art", text: "Pixel art of {subject}, 16-bit, vibrant palette" },
  { label: "Line drawing", text: "Minimal black ink line drawing of {subject} on white" },
];

export async function render(container) {
  mount(container, h("h1", { id: "generate-title", text: "Generate" }), loadingBox("Loading models…"));
  const catalog = await models();
  const params = paramsForm(catalog, { idPrefix: "gen" });
  const inputs = inputPicker({ catalog, setModel: (id) => params.setModel(id) });
  inputs.applyModel(params.spec());
  params.onModelChange((spec) => inputs.applyModel(spec));

  const promptInput = h("textarea", {
    name: "prompt",
    rows: 4,
    maxlength: 2000,
    required: true,
    placeholder: "Describe the image, e.g. a red fox reading a newspaper in a Paris café",
  });
  const prompt = field("Prompt", promptInput, { id: "gen-prompt", hint: "Ctrl+Enter to generate." });
  const countSelect = h("select", { name: "n" }, [1, 2, 3, 4].map((n) => h("option", { value: n, text: String(n) })));
  const count = field("Images", countSelect, { id: "gen-n" });
  const reuseSeed = h("input", { type: "checkbox", id: "gen-reuse-seed", name: "reuse_seed" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-lg", text: "Generate" });
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const estimate = estimateLine("gen-estimate");
  function reestimate() {
    const text = promptInput.value.trim();
    estimate.update(text && !params.validate() ? { prompt: text, ...params.values(), n: Number(countSelect.value) } : null);
  }
  for (const el of [promptInput, countSelect, params.element]) {
    el.addEventListener("input", reestimate);
    el.addEventListener("change", reestimate);
  }

  const templates = h(
    "div",
    { class: "suggestions", role: "group", "aria-label": "Prompt templates" },
    h("span", { class: "suggestions-label", text: "Templates" }),
    TEMPLATES.map((t) =>
      h("button", {
        type: "button",
        class: "chip",
        title: t.text,
        text: t.label,
        onclick: () => applyTemplate(t.text),
      }),
    ),
  );
  const recent = h("div", { class: "suggestions", role: "group", "aria-label": "Your recent prompts" });
  const resultPanel = h(
    "div",
    { class: "result-panel", "aria-live": "polite", "aria-busy": "false" },
    h("div", { class: "result-placeholder" }, h("p", { text: "Your image will appear here." })),
  );

  function applyTemplate(template) {
    const subject = promptInput.value.trim() || "a lighthouse on a cliff";
    promptInput.value = template.replace("{subject}", subject);
    promptInput.focus();
  }

  async function loadRecent() {
    try {
      const data = await get("/v1/prompts/recent");
      const prompts = (data.prompts || []).slice(0, 8);
      mount(
        recent,
        h("span", { class: "suggestions-label", text: "Recent" }),
        prompts.length
          ? prompts.map((p) =>
              h("button", {
                type: "button",
                class: "chip chip-recent",
                title: p.prompt,
                text: p.prompt.length > 48 ? `${p.prompt.slice(0, 47)}…` : p.prompt,
                "aria-label": `Use recent prompt: ${p.prompt}`,
                onclick: () => {
                  promptInput.value = p.prompt;
                  promptInput.focus();
                },
              }),
            )
          : h("span", { class: "hint", text: "Prompts you use appear here." }),
      );
    } catch (err) {
      mount(recent, h("span", { class: "hint field-error", text: `Recent prompts unavailable: ${err.message}` }));
    }
  }

  let lastImages = [];
  async function generate() {
    setFieldError(prompt, "");
    params.clearErrors();
    const text = promptInput.value.trim();
    if (!text) {
      setFieldError(prompt, "Enter a prompt.");
      promptInput.focus();
      return;
    }
    const invalid = params.validate();
    if (invalid) {
      params.showError(...invalid);
      return;
    }
    const inputProblem = inputs.problem();
    if (inputProblem) {
      params.showError("model", inputProblem);
      return;
    }
    if (reuseSeed.checked && lastImages[0] && params.seedInput.value === "") params.seedInput.value = lastImages[0].seed;
    const body = { prompt: text, ...params.values(), ...inputs.values(), n: Number(countSelect.value) };
    const given = inputs.shown();
    submit.disabled = true;
    submit.textContent = "Generating…";
    status.textContent = "Generating…";
    resultPanel.setAttribute("aria-busy", "true");
    mount(resultPanel, loadingBox("Generating your image…"));
    try {
      const data = await post("/v1/images", body);
      lastImages = data.images || [];
      showResult(lastImages, given);
      status.textContent = `Generated ${lastImages.length === 1 ? "an image" : `${lastImages.length} images`}.`;
      if (reuseSeed.checked && lastImages[0]) params.seedInput.value = lastImages[0].seed;
      else if (!reuseSeed.checked) params.seedInput.value = "";
      loadRecent();
    } catch (err) {
      status.textContent = "";
      const inputField = ["image_id", "reference_image_ids", "mask_id"].includes(String(err.field || "").replace(/\[\d+\]$/, ""));
      const onField =
        err.field === "prompt"
          ? (setFieldError(prompt, err.message), true)
          : params.showError(inputField ? "model" : err.field, err.message);
      mount(resultPanel, errorBox(err, { retry: generate }));
      if (!onField) showError(err, "Generation failed");
    } finally {
      submit.disabled = false;
      submit.textContent = "Generate";
      resultPanel.setAttribute("aria-busy", "false");
    }
  }

  function showResult(images, given = []) {
    const output = (img) =>
      h("img", {
        src: img.url,
        alt: img.prompt,
        width: img.width,
        height: img.height,
        class: "result-image",
        decoding: "async",
      });
    mount(
      resultPanel,
      images.map((img) =>
        h(
          "figure",
          { class: given.length ? "result result-pair" : "result" },
          given.length
            ? h(
                "div",
                { class: "pair", "aria-label": "Input and output" },
                h("div", { class: "pair-inputs" }, given.map((x, i) => inputThumb(x, i === 0 && inputs.edit() ? "Input" : "Reference"))),
                h("div", { class: "pair-output" }, output(img), h("p", { class: "hint", text: "Output" })),
              )
            : output(img),
          h(
            "figcaption",
            {},
            h("p", { class: "result-prompt", text: img.prompt }),
            h(
              "dl",
              { class: "meta-inline" },
              h("div", {}, h("dt", { text: "Seed" }), h("dd", { class: "mono", text: String(img.seed) })),
              h("div", {}, h("dt", { text: "Size" }), h("dd", { text: `${img.width}×${img.height}` })),
              h("div", {}, h("dt", { text: "Model" }), h("dd", { text: shortModel(img.model) })),
              h("div", {}, h("dt", { text: "Steps" }), h("dd", { text: String(img.steps) })),
            ),
            h(
              "div",
              { class: "actions" },
              h("a", { class: "btn", href: img.download_url, download: "", text: "Download" }),
              h("button", {
                type: "button",
                class: "btn",
                text: "Generate again with this seed",
                onclick: () => {
                  params.seedInput.value = img.seed;
                  if (!promptInput.value.trim()) promptInput.value = img.prompt;
                  generate();
                },
              }),
              h("button", {
                type: "button",
                class: "btn",
                text: "Edit this image",
                onclick: () => {
                  inputs.setEdit(imageInput(img));
                  promptInput.focus();
                },
              }),
              h("a", { class: "btn", href: "#/gallery", text: "View in gallery" }),
            ),
          ),
        ),
      ),
    );
    announce("Image ready");
  }

  const form = h(
    "form",
    { class: "stack", novalidate: true, "aria-labelledby": "generate-title" },
    prompt.wrap,
    templates,
    recent,
    inputs.element,
    params.element,
    h(
      "div",
      { class: "row wrap row-end" },
      count.wrap,
      h("div", { class: "check" }, reuseSeed, h("label", { for: "gen-reuse-seed", text: "Reuse seed" })),
    ),
    estimate.element,
    h("div", { class: "row" }, submit, status),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  promptInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  reuseSeed.addEventListener("change", () => {
    if (reuseSeed.checked && lastImages[0]) params.seedInput.value = lastImages[0].seed;
    if (reuseSeed.checked && !lastImages[0] && params.seedInput.value === "") toast("The seed of your next image will be kept.");
  });

  mount(
    container,
    h("div", { class: "screen-head" }, h("h1", { id: "generate-title", text: "Generate" }), h("p", { class: "lede", text: "Describe an image and FLUX paints it." })),
    h("div", { class: "generate-layout" }, h("div", { class: "card" }, form), h("div", { class: "card result-card" }, h("h2", { class: "card-title", text: "Result" }), resultPanel)),
  );

  const handed = takeEditHandoff();
  if (handed) inputs.setEdit(handed);
  const rerun = sessionStorage.getItem(RERUN_KEY);
  if (rerun) {
    sessionStorage.removeItem(RERUN_KEY);
    try {
      const values = JSON.parse(rerun);
      promptInput.value = values.prompt || "";
      params.set(values);
      generate();
    } catch {
      // ignore a malformed hand-off
    }
  } else {
    promptInput.focus();
  }
  loadRecent();
}
