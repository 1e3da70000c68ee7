// Account: usage against the monthly quota, the webhook signing secret, sign out.

import { get } from "../api.js";
import { currentUser, signOut } from "../auth.js";
import { formatUsd } from "../params.js";
import { errorBox, h, loadingBox, mount, showError, toast } from "../ui.js";

export async function render(container) {
  const user = currentUser();
  const usageBody = h("div", {}, loadingBox("Loading usage…"));
  const secretInput = h("input", { type: "text", id: "account-secret", readonly: true, value: "••••••••••••••••", autocomplete: "off", spellcheck: "false" });
  const revealBtn = h("button", { type: "button", class: "btn", text: "Reveal" });
  const copyBtn = h("button", { type: "button", class: "btn", text: "Copy", disabled: true });
  const signOutBtn = h("button", { type: "button", class: "btn btn-danger", text: "Sign out" });

  async function loadUsage() {
    mount(usageBody, loadingBox("Loading usage…"));
    try {
      const u = await get("/v1/me/usage");
      const pct = u.quota ? Math.min(100, Math.round((u.used / u.quota) * 100)) : 0;
      mount(
        usageBody,
        h("p", { class: "usage-number" }, String(u.used), h("small", { text: ` of ${u.quota} images` })),
        h("meter", { id: "account-meter", min: 0, max: u.quota || 1, low: (u.quota || 1) * 0.75, high: (u.quota || 1) * 0.9, optimum: 0, value: u.used, "aria-label": `Images used this month: ${u.used} of ${u.quota}` }),
        h("p", { class: "hint", text: `${u.remaining} remaining in ${u.period} (${pct}% used). The quota resets on the 1st (UTC).` }),
        h("p", { class: "usage-cost", id: "account-cost", text: `Cost this month: ${formatUsd(u.cost_usd ?? 0)} (upstream prices per megapixel from the model catalog).` }),
      );
    } catch (err) {
      mount(usageBody, errorBox(err, { retry: loadUsage }));
    }
  }

  revealBtn.addEventListener("click", async () => {
    revealBtn.disabled = true;
    try {
      const data = await get("/v1/me/webhook-secret");
      secretInput.value = data.secret || data.webhook_secret || "";
      copyBtn.disabled = !secretInput.value;
      revealBtn.hidden = true;
      secretInput.select();
    } catch (err) {
      revealBtn.disabled = false;
      showError(err, "Could not load the webhook secret");
    }
  });
  copyBtn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(secretInput.value);
      toast("Webhook secret copied.", { kind: "success" });
    } catch {
      secretInput.select();
      toast("Press Ctrl+C to copy the selected secret.");
    }
  });
  signOutBtn.addEventListener("click", () => signOut());

  mount(
    container,
    h("div", { class: "screen-head" }, h("h1", { id: "account-title", text: "Account" }), h("p", { class: "lede", text: user ? `Signed in as ${user.label}${user.isAdmin ? " (admin)" : ""}.` : "" })),
    h(
      "div",
      { class: "account-grid" },
      h("section", { class: "card", "aria-labelledby": "usage-title" }, h("h2", { id: "usage-title", class: "card-title", text: "Usage this month" }), usageBody),
      h(
        "section",
        { class: "card stack", "aria-labelledby": "secret-title" },
        h("h2", { id: "secret-title", class: "card-title", text: "Webhook secret" }),
        h("p", { class: "hint", text: "Webhooks of your batch jobs are signed with this secret (Standard Webhooks, HMAC-SHA256). Keep it private." }),
        h("div", { class: "field" }, h("label", { for: "account-secret", text: "Signing secret" }), h("div", { class: "secret-row" }, secretInput, revealBtn, copyBtn)),
      ),
      h(
        "section",
        { class: "card stack", "aria-labelledby": "session-title" },
        h("h2", { id: "session-title", class: "card-title", text: "Session" }),
        h("p", { text: user ? `User id: ${user.id}` : "" }),
        signOutBtn,
      ),
    ),
  );
  await loadUsage();
}
