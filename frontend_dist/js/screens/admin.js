// Admin (admins only): health of the Together key pool, by key id (never the key), the month's
// spend per key (shared keys and users' own keys, GET /v1/admin/spend), and the model catalog
// against the upstream's own model list (GET /v1/admin/models, checked hourly).

import { get } from "../api.js";
import { formatUsd } from "../params.js";
import { emptyState, errorBox, formatDuration, h, loadingBox, mount, statusBadge } from "../ui.js";

const REFRESH_MS = 5000;

export async function render(container) {
  let timer = null;
  let stopped = false;
  const summary = h("p", { class: "lede", role: "status", "aria-live": "polite" });
  const body = h("div", {}, loadingBox("Loading key health…"));
  const refreshBtn = h("button", { type: "button", class: "btn", text: "Refresh" });

  async function load() {
    if (timer) clearTimeout(timer);
    try {
      const data = await get("/v1/admin/keys");
      if (stopped) return;
      const keys = data.keys || [];
      summary.textContent = `${data.healthy ?? keys.filter((k) => k.state === "healthy").length} of ${keys.length} keys healthy · updated ${new Date().toLocaleTimeString()}`;
      if (!keys.length) {
        mount(body, emptyState("No keys configured", "Set TOGETHER_API_KEYS or TOGETHER_KEYS_SECRET_ID."));
      } else {
        mount(
          body,
          h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              {},
              h("caption", { class: "visually-hidden", text: "Key health by key id" }),
              h(
                "thead",
                {},
                h(
                  "tr",
                  {},
                  ["Key id", "State", "Cooldown", "Requests", "Successes", "Rate limited", "Errors", "Last error"].map((t, i) =>
                    h("th", { scope: "col", class: i >= 3 && i <= 6 ? "num" : null, text: t }),
                  ),
                ),
              ),
              h(
                "tbody",
                {},
                keys.map((k) =>
                  h(
                    "tr",
                    {},
                    h("th", { scope: "row", class: "mono", text: k.key_id }),
                    h("td", {}, statusBadge(k.state)),
                    h("td", { text: k.cooldown_remaining_s > 0 ? formatDuration(k.cooldown_remaining_s) : "—" }),
                    h("td", { class: "num", text: String(k.requests ?? 0) }),
                    h("td", { class: "num", text: String(k.successes ?? 0) }),
                    h("td", { class: "num", text: String(k.rate_limited ?? 0) }),
                    h("td", { class: "num", text: String(k.errors ?? 0) }),
                    h("td", { text: k.last_error || "—" }),
                  ),
                ),
              ),
            ),
          ),
        );
      }
      timer = setTimeout(load, REFRESH_MS);
    } catch (err) {
      if (stopped) return;
      mount(body, errorBox(err, { retry: load }));
    }
  }
  const catalogSummary = h("p", { class: "hint", id: "catalog-summary", role: "status", "aria-live": "polite" });
  const catalogBody = h("div", {}, loadingBox("Loading the model catalog…"));

  function yesNo(value) {
    if (value === null || value === undefined) return "not checked";
    return value ? "yes" : "no";
  }

  async function loadCatalog() {
    try {
      const data = await get("/v1/admin/models");
      if (stopped) return;
      const checked = data.checked_at ? `upstream checked ${new Date(data.checked_at).toLocaleString()}` : "upstream not checked yet";
      const failed = data.error ? ` · last check failed: ${data.error}` : "";
      catalogSummary.textContent = `Catalog of ${data.catalog_checked} · ${checked}${failed}`;
      const rows = (data.models || []).map((m) =>
        h(
          "tr",
          {},
          h("th", { scope: "row", class: "mono", text: m.id }),
          h("td", {}, statusBadge(m.retired ? "retired" : m.available ? "available" : "unavailable")),
          h("td", { text: m.retired ? "—" : yesNo(m.listed_upstream) }),
          h("td", { text: m.replacement || "—" }),
          h("td", { class: "num", text: m.price_per_mp === null || m.price_per_mp === undefined ? "—" : `$${m.price_per_mp}` }),
        ),
      );
      const extra = (data.upstream_only || []).map((id) =>
        h("tr", {}, h("th", { scope: "row", class: "mono", text: id }), h("td", {}, statusBadge("not_in_catalog")), h("td", { text: "yes" }), h("td", { text: "—" }), h("td", { class: "num", text: "—" })),
      );
      mount(
        catalogBody,
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "catalog-table" },
            h("caption", { class: "visually-hidden", text: "Model catalog against the upstream's model list" }),
            h("thead", {}, h("tr", {}, ["Model", "State", "Listed upstream", "Replacement", "Price / MP"].map((t, i) => h("th", { scope: "col", class: i === 4 ? "num" : null, text: t })))),
            h("tbody", {}, rows, extra),
          ),
        ),
      );
    } catch (err) {
      if (stopped) return;
      mount(catalogBody, errorBox(err, { retry: loadCatalog }));
    }
  }
  const spendSummary = h("p", { class: "hint", id: "spend-summary" });
  const spendBody = h("div", {}, loadingBox("Loading spend per key…"));
  async function loadSpend() {
    try {
      const data = await get("/v1/admin/spend");
      if (stopped) return;
      spendSummary.textContent = `${data.period}: ${formatUsd(data.total_usd)} in all (catalog prices).`;
      const rows = (data.keys || []).map((k) =>
        h(
          "tr",
          { "data-key-id": k.key_id, "data-source": k.source },
          h("th", { scope: "row", class: "mono", text: k.key_id }),
          h("td", { text: k.source === "own" ? "a user's own key" : "shared pool" }),
          h("td", { class: "num", text: String(k.images) }),
          h("td", { class: "num", text: formatUsd(k.usd) }),
        ),
      );
      mount(
        spendBody,
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "spend-table" },
            h("caption", { class: "visually-hidden", text: "Spend this month per key id" }),
            h("thead", {}, h("tr", {}, ["Key id", "Source", "Images", "Cost"].map((t, i) => h("th", { scope: "col", class: i >= 2 ? "num" : null, text: t })))),
            h("tbody", {}, rows),
          ),
        ),
      );
    } catch (err) {
      if (stopped) return;
      mount(spendBody, errorBox(err, { retry: loadSpend }));
    }
  }
  refreshBtn.addEventListener("click", () => {
    load();
    loadSpend();
    loadCatalog();
  });

  mount(
    container,
    h("div", { class: "screen-head" }, h("h1", { id: "admin-title", text: "Admin: key health" }), refreshBtn, summary),
    h("section", { class: "card", "aria-label": "Keys" }, body),
    h("section", { class: "card", "aria-labelledby": "spend-title" }, h("h2", { id: "spend-title", text: "Spend per key this month" }), spendSummary, spendBody),
    h(
      "section",
      { class: "card", "aria-labelledby": "catalog-title" },
      h("h2", { id: "catalog-title", text: "Model catalog vs upstream" }),
      catalogSummary,
      catalogBody,
    ),
  );
  await Promise.all([load(), loadSpend(), loadCatalog()]);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
