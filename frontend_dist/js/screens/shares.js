// Shares: the user's public share links with view counts and expiry; copy a link, revoke it.

import { del, get } from "../api.js";
import { confirmDialog, emptyState, errorBox, formatDate, h, loadingBox, mount, plural, showError, toast } from "../ui.js";

/** Copy `text` to the clipboard; falls back to selecting `input` so the user can press Ctrl+C. */
export async function copyLink(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Link copied.", { kind: "success" });
  } catch {
    if (input) input.select();
    toast("Press Ctrl+C to copy the selected link.");
  }
}

/** A read-only field holding a share URL, with a Copy button. */
export function linkRow(url, label) {
  const input = h("input", { type: "url", readonly: true, value: url, class: "share-url", "aria-label": label, spellcheck: "false" });
  input.addEventListener("focus", () => input.select());
  const copy = h("button", { type: "button", class: "btn btn-small", text: "Copy", "aria-label": `Copy ${label}` });
  copy.addEventListener("click", () => copyLink(url, input));
  return h("div", { class: "secret-row share-row" }, input, copy);
}

export async function render(container) {
  const body = h("div", {}, loadingBox("Loading your share links…"));

  function row(share) {
    const what = share.target_type === "collection" ? `Collection “${share.target_id}”` : `Image ${share.target_id}`;
    const revoke = h("button", { type: "button", class: "btn btn-danger btn-small", text: "Revoke", "aria-label": `Revoke link to ${what}` });
    const li = h(
      "li",
      { class: "card stack share-item", dataset: { id: share.share_id } },
      h("p", { class: "share-target" }, h("strong", { text: what })),
      linkRow(share.url, `Link to ${what}`),
      h(
        "p",
        { class: "hint share-meta" },
        h("span", { class: "share-views", text: plural(share.views, "view") }),
        " · ",
        h("span", { text: `expires ${formatDate(share.expires_at)}` }),
        share.last_viewed_at ? h("span", { text: ` · last viewed ${formatDate(share.last_viewed_at)}` }) : null,
      ),
      h("div", { class: "actions" }, revoke),
    );
    revoke.addEventListener("click", async () => {
      const ok = await confirmDialog("Revoke this link? Anyone who opens it will get “not found”.", {
        title: "Revoke link?",
        confirmLabel: "Revoke",
        danger: true,
      });
      if (!ok) return;
      revoke.disabled = true;
      try {
        await del(`/v1/shares/${encodeURIComponent(share.share_id)}`);
        li.remove();
        toast("Link revoked.", { kind: "success" });
        if (!container.querySelector(".share-item")) load();
      } catch (err) {
        revoke.disabled = false;
        showError(err, "Could not revoke the link");
      }
    });
    return li;
  }

  async function load() {
    mount(body, loadingBox("Loading your share links…"));
    try {
      const data = await get("/v1/shares");
      const shares = data.shares || [];
      if (!shares.length) {
        mount(
          body,
          emptyState("No share links", "Open an image in the gallery and choose “Share” to create a public link.", h("a", { class: "btn btn-primary", href: "#/gallery", text: "Open the gallery" })),
        );
        return;
      }
      mount(body, h("ul", { class: "share-list", "aria-label": "Your share links" }, shares.map(row)));
    } catch (err) {
      mount(body, errorBox(err, { retry: load }));
    }
  }

  mount(
    container,
    h(
      "div",
      { class: "screen-head" },
      h("h1", { id: "shares-title", text: "Shares" }),
      h("p", { class: "lede", text: "Public links to your images and collections. Anyone with a link can view it without signing in until it expires or you revoke it." }),
    ),
    body,
  );
  await load();
}
