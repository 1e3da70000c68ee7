// Sign in: Clerk's component in production; in the dev stack, pick or type a user id.

import { devSignIn, mode, mountClerkSignIn, takeSignOutReason } from "../auth.js";
import { field, h, mount, setFieldError } from "../ui.js";

const SUGGESTED_USERS = ["alice", "bob", "carol"];

export function render(container) {
  const reason = takeSignOutReason();
  const notice =
    reason === "expired"
      ? h("div", { class: "callout callout-warn", role: "alert" }, h("p", { text: "Your session has expired. Please sign in again." }))
      : null;

  if (mode === "clerk") {
    const slot = h("div", { class: "clerk-slot" });
    mount(
      container,
      h("div", { class: "signin-card" }, h("h1", { id: "signin-title", text: "Sign in to PromptCanvas" }), notice, slot),
    );
    return mountClerkSignIn(slot);
  }

  const userInput = h("input", {
    type: "text",
    name: "user_id",
    autocomplete: "username",
    required: true,
    maxlength: 128,
    pattern: "[A-Za-z0-9_\\-]+",
    spellcheck: "false",
    autocapitalize: "none",
    list: "signin-users",
    placeholder: "e.g. alice",
  });
  const user = field("User id", userInput, { hint: "Letters, digits, _ and -. Each user id has its own private gallery." });
  const datalist = h("datalist", { id: "signin-users" }, SUGGESTED_USERS.map((u) => h("option", { value: u })));
  const adminBox = h("input", { type: "checkbox", name: "admin", id: "signin-admin" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block", text: "Sign in" });
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });

  const form = h(
    "form",
    { class: "stack", novalidate: true },
    user.wrap,
    datalist,
    h("div", { class: "check" }, adminBox, h("label", { for: "signin-admin", text: "Sign in as an organization admin" })),
    submit,
    status,
  );
  const quick = h(
    "div",
    { class: "quick-users" },
    h("p", { class: "hint", text: "Or continue as:" }),
    h(
      "div",
      { class: "chips" },
      SUGGESTED_USERS.map((u) =>
        h("button", {
          type: "button",
          class: "chip",
          text: u,
          onclick: () => {
            userInput.value = u;
            form.requestSubmit();
          },
        }),
      ),
    ),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = userInput.value.trim();
    if (!value) return setFieldError(user, "Enter a user id.") || userInput.focus();
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(value)) {
      setFieldError(user, "Use only letters, digits, _ and - (up to 128 characters).");
      userInput.focus();
      return;
    }
    setFieldError(user, "");
    submit.disabled = true;
    submit.textContent = "Signing in…";
    status.textContent = "Signing in…";
    try {
      await devSignIn(value, { admin: adminBox.checked });
    } catch (err) {
      setFieldError(user, err.message);
      status.textContent = "";
      submit.disabled = false;
      submit.textContent = "Sign in";
      userInput.focus();
    }
  });

  mount(
    container,
    h(
      "div",
      { class: "signin-card" },
      h("h1", { id: "signin-title", text: "Sign in to PromptCanvas" }),
      h("p", { class: "lede", text: "Local development sign-in: tokens come from the dev identity provider." }),
      notice,
      form,
      quick,
    ),
  );
  userInput.focus();
}
