// Admin (admins only): health of the Together key pool, by key id (never the key).

import { get } from "../api.js";
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
  refreshBtn.addEventListener("click", load);

  mount(
    container,
    h("div", { class: "screen-head" }, h("h1", { id: "admin-title", text: "Admin: key health" }), refreshBtn, summary),
    h("section", { class: "card", "aria-label": "Keys" }, body),
  );
  await load();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
