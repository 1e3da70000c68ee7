// The single-page app: hash routing, the top bar, and the sign-in gate.

import { get } from "./api.js";
import { currentUser, initAuth, isSignedIn, mode, onAuthChange, signOut } from "./auth.js";
import { announce, errorBox, h, mount } from "./ui.js";

// Screens are loaded on first visit (ES modules; no bundler).
const ROUTES = {
  signin: { title: "Sign in", load: () => import("./screens/signin.js"), public: true },
  generate: { title: "Generate", load: () => import("./screens/generate.js") },
  batch: { title: "Batch", load: () => import("./screens/batch.js") },
  jobs: { title: "Jobs", load: () => import("./screens/jobs.js") },
  job: { title: "Job", load: () => import("./screens/job.js"), nav: "jobs" },
  gallery: { title: "Gallery", load: () => import("./screens/gallery.js") },
  videos: { title: "Videos", load: () => import("./screens/videos.js") },
  images: { title: "Images", load: () => import("./screens/images.js") },
  shares: { title: "Shares", load: () => import("./screens/shares.js") },
  account: { title: "Account", load: () => import("./screens/account.js") },
  admin: { title: "Admin", load: () => import("./screens/admin.js"), admin: true },
};

const main = document.getElementById("main");
const nav = document.querySelector(".mainnav");
const whoami = document.getElementById("whoami");
let cleanup = null;
let renderToken = 0;
let afterSignIn = "#/generate";
// Whether the API makes the signed-in user an admin (GET /v1/me): an admin role in some other
// organization is not enough, so the token's role alone never shows the Admin screen.
let adminCheck = { id: null, admin: false, pending: null };

const adminKey = (user) => `${user.id}|${user.role || ""}`; // asked again when the active organization changes

function isAdmin(user) {
  return Boolean(user && adminCheck.id === adminKey(user) && adminCheck.admin);
}

function checkAdmin(user) {
  if (!user) return Promise.resolve(false);
  if (adminCheck.id === adminKey(user)) return adminCheck.pending || Promise.resolve(adminCheck.admin);
  const check = { id: adminKey(user), admin: false, pending: null };
  adminCheck = check;
  check.pending = get("/v1/me")
    .then((me) => Boolean(me && me.is_admin))
    .catch(() => false)
    .then((admin) => {
      check.admin = admin;
      check.pending = null;
      if (adminCheck === check) renderChrome();
      return admin;
    });
  return check.pending;
}

/** "#/jobs/01H..?status=running" -> {name: "job", params: {id}, query} */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(queryPart));
  if (parts[0] === "jobs" && parts[1]) return { name: "job", params: { id: parts[1] }, query };
  return { name: parts[0] || "generate", params: {}, query };
}

export function navigate(hash) {
  if (location.hash === hash) route({ focus: true });
  else location.hash = hash;
}

function renderChrome() {
  const signedIn = isSignedIn();
  const user = currentUser();
  nav.hidden = !signedIn;
  whoami.hidden = !signedIn;
  if (signedIn && user) checkAdmin(user);
  nav.querySelector("[data-admin-only]").hidden = !isAdmin(user);
  if (signedIn && user) {
    mount(
      whoami,
      h("span", { class: "whoami-name", title: user.label }, h("span", { class: "visually-hidden", text: "Signed in as " }), user.label),
      isAdmin(user) ? h("span", { class: "badge badge-admin", text: "admin" }) : null,
      h("button", { type: "button", class: "btn btn-small btn-ghost", onclick: () => signOut(), text: "Sign out" }),
    );
  }
}

async function route({ focus = false } = {}) {
  const token = ++renderToken;
  let { name, params, query } = parseHash();
  if (!ROUTES[name]) name = "generate";
  const spec = ROUTES[name];
  if (!spec.public && !isSignedIn()) {
    if (name !== "signin") afterSignIn = location.hash || "#/generate";
    name = "signin";
  } else if (name === "signin" && isSignedIn()) {
    navigate(afterSignIn && afterSignIn !== "#/signin" ? afterSignIn : "#/generate");
    return;
  }
  const user = currentUser();
  const active = ROUTES[name];
  if (active.admin && !(user && (await checkAdmin(user)))) {
    if (token !== renderToken) return;
    teardown();
    mount(main, h("section", { class: "screen" }, h("h1", { text: "Admin" }), errorBox({ message: "This page is for administrators only." })));
    return;
  }
  teardown();
  renderChrome();
  for (const link of nav.querySelectorAll("a[data-route]")) {
    if (link.dataset.route === (active.nav || name)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${active.title} · PromptCanvas`;
  const container = h("section", { class: `screen screen-${name}`, "aria-labelledby": `${name}-title` });
  mount(main, container);
  try {
    const module = await active.load();
    if (token !== renderToken) return;
    const result = await module.render(container, { params, query, navigate, afterSignIn: () => afterSignIn });
    if (token !== renderToken) {
      if (typeof result === "function") result();
      return;
    }
    cleanup = typeof result === "function" ? result : null;
  } catch (err) {
    if (token !== renderToken) return;
    mount(container, h("h1", { id: `${name}-title`, text: active.title }), errorBox(err, { retry: route }));
  }
  announce(`${active.title} page`);
  if (focus) {
    // Move focus to the new screen for keyboard and screen-reader users (not on first load).
    const heading = container.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }
}

function teardown() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.warn("cleanup failed", err);
    }
  }
  cleanup = null;
}

async function start() {
  try {
    await initAuth();
  } catch (err) {
    mount(main, h("section", { class: "screen" }, h("h1", { text: "PromptCanvas" }), errorBox(err)));
    return;
  }
  if (mode === "none") {
    mount(
      main,
      h(
        "section",
        { class: "screen" },
        h("h1", { text: "PromptCanvas" }),
        errorBox({ message: "This site is not configured: config.js names no sign-in provider." }),
      ),
    );
    return;
  }
  let wasSignedIn = isSignedIn();
  onAuthChange(() => {
    const now = isSignedIn();
    renderChrome();
    if (now !== wasSignedIn) {
      wasSignedIn = now;
      if (!now && location.hash && !location.hash.startsWith("#/signin")) afterSignIn = location.hash;
      navigate(now ? afterSignIn || "#/generate" : "#/signin");
    }
  });
  window.addEventListener("hashchange", () => route({ focus: true }));
  route();
}

start();
