// Account: usage against the monthly quota and budget, spend by model, the user's own Together
// key (status, last four characters, replace, remove), the webhook signing secret, sign out.

import { del, get, put } from "../api.js";
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
        u.budget_usd != null
          ? h("p", { class: "hint", id: "account-budget", text: `Budget: ${formatUsd(u.committed_usd ?? 0)} of ${formatUsd(u.budget_usd)} held this month (${formatUsd(u.budget_remaining_usd ?? 0)} left). Work on your own key does not count.` })
          : null,
        spendTable(u.spend_by_model || []),
      );
    } catch (err) {
      mount(usageBody, errorBox(err, { retry: loadUsage }));
    }
  }

  const keyBody = h("div", { id: "account-key" }, loadingBox("Loading your key…"));
  const keyInput = h("input", { type: "password", id: "account-key-input", autocomplete: "off", spellcheck: "false", placeholder: "Your Together API key" });
  const keySaveBtn = h("button", { type: "submit", class: "btn btn-primary", id: "account-key-save", text: "Save key" });
  const keyForm = h(
    "form",
    { class: "stack", id: "account-key-form" },
    h("div", { class: "field" }, h("label", { for: "account-key-input", text: "Together API key" }), keyInput),
    h("p", { class: "hint", text: "Checked with Together before it is saved, stored encrypted, and never shown again. Your images and batch jobs then use only this key and do not count against the monthly quota." }),
    keySaveBtn,
  );

  async function loadKey() {
    mount(keyBody, loadingBox("Loading your key…"));
    let key = null;
    try {
      key = await get("/v1/me/together-key");
    } catch (err) {
      if (err.status !== 404) {
        mount(keyBody, errorBox(err, { retry: loadKey }));
        return;
      }
    }
    if (!key) {
      keySaveBtn.textContent = "Save key";
      mount(keyBody, h("p", { id: "account-key-status", "data-status": "none", text: "No key saved: your work uses PromptCanvas's shared keys and your monthly quota." }));
      return;
    }
    const labels = { active: "Active", cooling: "Cooling down (rate limited)", refused: "Refused by Together", out_of_credits: "Out of credits" };
    const removeBtn = h("button", { type: "button", class: "btn btn-danger", id: "account-key-remove", text: "Remove key" });
    removeBtn.addEventListener("click", async () => {
      removeBtn.disabled = true;
      try {
        await del("/v1/me/together-key");
        toast("Your Together key was removed.", { kind: "success" });
        await loadKey();
      } catch (err) {
        removeBtn.disabled = false;
        showError(err, "Could not remove the key");
      }
    });
    keySaveBtn.textContent = "Replace key";
    mount(
      keyBody,
      h("p", { id: "account-key-status", "data-status": key.status, class: key.status === "active" ? "" : "form-error" }, `${labels[key.status] || key.status}: key ending in `, h("code", { id: "account-key-last4", text: key.last4 }), ` (id ${key.key_id}, verified ${new Date(key.verified_at).toLocaleString()}).`),
      key.reason ? h("p", { class: "hint", text: `Together said: ${key.reason}. Replace the key, then retry paused jobs.` }) : null,
      removeBtn,
    );
  }

  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = keyInput.value.trim();
    if (!value) {
      keyInput.focus();
      return;
    }
    keySaveBtn.disabled = true;
    try {
      const saved = await put("/v1/me/together-key", { key: value });
      keyInput.value = "";
      toast(`Key ending in ${saved.last4} saved.`, { kind: "success" });
      await loadKey();
    } catch (err) {
      showError(err, "Could not save the key");
    } finally {
      keySaveBtn.disabled = false;
    }
  });

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
    h("div", { class: "screen-head" }, h("h1", { id: "account-title", text: "Account" }), h("p", { class: "lede", text: user ? `Signed in as ${user.label}.` : "" })),
    h(
      "div",
      { class: "account-grid" },
      h("section", { class: "card", "aria-labelledby": "usage-title" }, h("h2", { id: "usage-title", class: "card-title", text: "Usage this month" }), usageBody),
      h("section", { class: "card stack", "aria-labelledby": "key-title" }, h("h2", { id: "key-title", class: "card-title", text: "Your Together key" }), keyBody, keyForm),
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
  await Promise.all([loadUsage(), loadKey()]);
}

/** The month's spend by model and key source (a table; nothing when nothing was spent). */
function spendTable(rows) {
  if (!rows.length) return h("p", { class: "hint", id: "account-spend", text: "Nothing spent this month yet." });
  return h(
    "div",
    { class: "table-wrap" },
    h(
    "table",
    { class: "table", id: "account-spend" },
    h("caption", { text: "Spend by model this month" }),
    h("thead", {}, h("tr", {}, h("th", { text: "Model" }), h("th", { text: "Key" }), h("th", { text: "Images" }), h("th", { text: "Cost" }))),
    h(
      "tbody",
      {},
      ...rows.map((r) => h("tr", { "data-model": r.model, "data-source": r.source }, h("td", { text: r.model }), h("td", { text: r.source === "own" ? "your key" : "shared" }), h("td", { text: String(r.images) }), h("td", { text: formatUsd(r.usd) }))),
    ),
  ),
  );
}
