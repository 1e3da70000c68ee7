// Small DOM helpers shared by every screen: an element builder, toasts, dialogs, formatting.

/**
 * Build an element. `attrs` keys: `class`, `text`, `html` is deliberately not supported,
 * `on<event>` handlers, `dataset`, boolean attributes (true/false), anything else as an attribute.
 * Children: nodes, strings, numbers, arrays, or null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string" && key !== "list") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace every child of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
/** A unique id for label/aria wiring. */
export function uid(prefix = "pc") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: returns {wrap, input, hint, error}. */
export function field(label, input, { hint, id } = {}) {
  input.id = input.id || id || uid("f");
  const hintEl = hint ? h("p", { class: "hint", id: `${input.id}-hint`, text: hint }) : null;
  const errorEl = h("p", { class: "field-error", id: `${input.id}-error`, hidden: true });
  const describedBy = [hintEl && hintEl.id, errorEl.id].filter(Boolean).join(" ");
  input.setAttribute("aria-describedby", describedBy);
  const wrap = h("div", { class: "field" }, h("label", { for: input.id, text: label }), input, hintEl, errorEl);
  return { wrap, input, hint: hintEl, error: errorEl };
}

/** Show or clear a field's error (and aria-invalid). */
export function setFieldError(f, message) {
  if (!f) return;
  f.error.textContent = message || "";
  f.error.hidden = !message;
  if (message) f.input.setAttribute("aria-invalid", "true");
  else f.input.removeAttribute("aria-invalid");
}

/** A transient notification. Errors use role=alert so screen readers announce them at once. */
export function toast(message, { kind = "info", timeout = 6000 } = {}) {
  const region = document.getElementById("toasts");
  const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss notification", text: "×" });
  const item = h(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", { class: "toast-text", text: message }),
    close,
  );
  const remove = () => item.remove();
  close.addEventListener("click", remove);
  region.append(item);
  if (timeout && kind !== "error") setTimeout(remove, timeout);
  else if (timeout) setTimeout(remove, timeout * 2);
  return item;
}

/** Tell the user about a failed call, by the API's message. */
export function showError(err, prefix = "") {
  const message = errorMessage(err);
  toast(prefix ? `${prefix}: ${message}` : message, { kind: "error" });
  return message;
}

export function errorMessage(err) {
  if (!err) return "Something went wrong.";
  return err.message || String(err);
}

/** An inline error box (role=alert) for a screen or panel. */
export function errorBox(err, { retry } = {}) {
  return h(
    "div",
    { class: "callout callout-error", role: "alert" },
    h("p", { text: errorMessage(err) }),
    retry ? h("button", { type: "button", class: "btn", onclick: retry, text: "Try again" }) : null,
  );
}

export function loadingBox(text = "Loading…") {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), text);
}

export function emptyState(title, body, action) {
  return h("div", { class: "empty" }, h("h3", { text: title }), body ? h("p", { text: body }) : null, action || null);
}

/** A modal confirmation built on <dialog>. Resolves true when confirmed. */
export function confirmDialog(message, { confirmLabel = "Confirm", danger = false, title = "Are you sure?" } = {}) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": titleId },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: titleId, text: title }),
        h("p", { text: message }),
        h(
          "div",
          { class: "actions" },
          h("button", { value: "cancel", class: "btn", text: "Cancel" }),
          h("button", { value: "ok", class: danger ? "btn btn-danger" : "btn btn-primary", text: confirmLabel }),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("button[value=cancel]").focus();
  });
}

/** Start a download of `url` (a presigned URL with Content-Disposition: attachment). */
export function startDownload(url, filename = "") {
  const a = h("a", { href: url, download: filename, class: "visually-hidden", text: "download" });
  document.body.append(a);
  a.click();
  setTimeout(() => a.remove(), 1000);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** "1 h 2 min", "3 min 05 s", "42 s". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "—";
  let s = Math.max(0, Math.round(Number(seconds)));
  const hours = Math.floor(s / 3600);
  s -= hours * 3600;
  const minutes = Math.floor(s / 60);
  s -= minutes * 60;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${String(s).padStart(2, "0")} s`;
  return `${s} s`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export function formatDate(value) {
  if (!value) return "—";
  const date = typeof value === "number" ? new Date(value * (value < 1e12 ? 1000 : 1)) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateFormat.format(date);
}

/** Seconds since the epoch for an ISO string or epoch number (or null). */
export function toEpochSeconds(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value > 1e12 ? value / 1000 : value;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t / 1000;
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

export function shortModel(id) {
  return String(id || "").replace(/^black-forest-labs\//, "");
}

/** Announce a message to screen readers (polite). */
export function announce(message) {
  const region = document.getElementById("route-announcer");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

/** A status badge for a job or item status. */
export function statusBadge(status) {
  const label = String(status || "unknown").replaceAll("_", " ");
  return h("span", { class: `badge badge-${status}`, text: label });
}
