// The cost estimate shown before work starts (POST /v1/estimates): one live line that asks the
// API again, debounced, whenever the request changes. The API prices with the model catalog
// (megapixels x price per megapixel x steps / default steps); the line says so.

import { post } from "./api.js";
import { formatUsd } from "./params.js";
import { h } from "./ui.js";

const DEBOUNCE_MS = 400;

/**
 * @param {string} id  the element id (e.g. "batch-estimate")
 * @returns {{element: HTMLElement, update(body: object|null): void}}  `update(null)` clears it
 */
export function estimateLine(id) {
  const element = h("p", { class: "estimate hint", id, role: "status", "aria-live": "polite", hidden: true });
  let timer = null;
  let seq = 0;
  function update(body) {
    clearTimeout(timer);
    const mine = ++seq;
    if (!body) {
      element.hidden = true;
      element.textContent = "";
      return;
    }
    timer = setTimeout(async () => {
      try {
        const e = await post("/v1/estimates", body);
        if (mine !== seq) return;
        element.dataset.usd = String(e.usd);
        element.textContent = `Estimated cost: ${formatUsd(e.usd)} for ${e.images} ${e.images === 1 ? "image" : "images"} (${e.megapixels.toFixed(2)} MP at ${formatUsd(e.price_per_mp)} per MP, prices of ${e.priced_at}).`;
        element.hidden = false;
      } catch (err) {
        if (mine !== seq) return;
        element.dataset.usd = "";
        element.textContent = `No estimate: ${err.message}`;
        element.hidden = false;
      }
    }, DEBOUNCE_MS);
  }
  return { element, update };
}
