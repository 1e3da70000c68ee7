// Sign-in. Two providers behind one interface, so the API client does not care which is in use:
//
// - "clerk": production. ClerkJS is loaded from the Clerk Frontend API that the publishable key names;
//   getToken() asks Clerk's session for a fresh token before every API call (tokens live 60 s).
// - "dev": the dev stack's identity provider (config.devAuth.token_url). The user picks or types a user
//   id (and optionally an org role); it is kept in sessionStorage and a token is minted from the IdP,
//   cached until ~10 s before it expires.

const config = window.PROMPTCANVAS_CONFIG || {};
const DEV_KEY = "promptcanvas.devUser";
const ADMIN_ROLES = ["admin"]; // compared without the "org:" prefix, as the API does (CLERK_ADMIN_ROLES)
const REFRESH_MARGIN_S = 10;

export const mode = config.devAuth && config.devAuth.token_url ? "dev" : config.clerkPublishableKey ? "clerk" : "none";

let clerk = null; // window.Clerk once loaded
let devToken = null; // {token, expires_at}
let devTokenPromise = null;
const listeners = new Set();

/** Call `fn()` whenever the signed-in state changes. */
export function onAuthChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit() {
  for (const fn of listeners) fn();
}

/** Load the provider. Resolves once it is known whether someone is signed in. */
export async function initAuth() {
  if (mode === "clerk") {
    clerk = await loadClerk(config.clerkPublishableKey);
    clerk.addListener(() => emit());
  }
}

/** The Clerk Frontend API host encoded in a publishable key ("pk_test_<base64 of host$>"). */
export function frontendApiFromKey(key) {
  const encoded = String(key).split("_")[2] || "";
  const host = atob(encoded).replace(/\$$/, "");
  if (!/^[a-z0-9.-]+$/i.test(host)) throw new Error("The Clerk publishable key in config.js is not valid.");
  return host;
}

function loadClerk(publishableKey) {
  return new Promise((resolve, reject) => {
    if (window.Clerk) {
      window.Clerk.load().then(() => resolve(window.Clerk), reject);
      return;
    }
    const script = document.createElement("script");
    script.src = `https://${frontendApiFromKey(publishableKey)}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`;
    script.async = true;
    script.crossOrigin = "anonymous";
    script.dataset.clerkPublishableKey = publishableKey;
    script.addEventListener("load", () => {
      window.Clerk.load().then(() => resolve(window.Clerk), reject);
    });
    script.addEventListener("error", () => reject(new Error("Could not load the sign-in service (Clerk).")));
    document.head.append(script);
  });
}

function devUser() {
  try {
    return JSON.parse(sessionStorage.getItem(DEV_KEY) || "null");
  } catch {
    return null;
  }
}

/** Whether someone is signed in. */
export function isSignedIn() {
  if (mode === "clerk") return Boolean(clerk && clerk.user && clerk.session);
  if (mode === "dev") return Boolean(devUser());
  return false;
}

/** {id, label, isAdmin, role} of the signed-in user, or null. */
export function currentUser() {
  if (mode === "clerk" && clerk && clerk.user) {
    const u = clerk.user;
    const role = clerk.organization ? membershipRole(u, clerk.organization.id) : null;
    const label = u.primaryEmailAddress ? u.primaryEmailAddress.emailAddress : u.username || u.id;
    return { id: u.id, label, role, isAdmin: isAdminRole(role) };
  }
  if (mode === "dev") {
    const u = devUser();
    if (!u) return null;
    return { id: u.user_id, label: u.user_id, role: u.org_role || null, isAdmin: isAdminRole(u.org_role) };
  }
  return null;
}

function membershipRole(user, orgId) {
  const m = (user.organizationMemberships || []).find((x) => x.organization && x.organization.id === orgId);
  return m ? m.role : null;
}

export function isAdminRole(role) {
  if (!role) return false;
  return ADMIN_ROLES.includes(String(role).replace(/^org:/, ""));
}

/** A bearer token for the API; fresh (Clerk) or cached until shortly before it expires (dev). */
export async function getToken({ force = false } = {}) {
  if (mode === "clerk") {
    if (!clerk || !clerk.session) throw new SignedOutError();
    const token = await clerk.session.getToken(force ? { skipCache: true } : undefined);
    if (!token) throw new SignedOutError();
    return token;
  }
  if (mode === "dev") {
    const user = devUser();
    if (!user) throw new SignedOutError();
    const now = Date.now() / 1000;
    if (!force && devToken && devToken.user_id === user.user_id && devToken.expires_at - now > REFRESH_MARGIN_S) {
      return devToken.token;
    }
    if (!devTokenPromise) {
      devTokenPromise = mintDevToken(user).finally(() => {
        devTokenPromise = null;
      });
    }
    devToken = await devTokenPromise;
    return devToken.token;
  }
  throw new SignedOutError("Sign-in is not configured: config.js names neither Clerk nor a dev identity provider.");
}

async function mintDevToken(user) {
  const body = { user_id: user.user_id, azp: location.origin };
  if (user.org_id) body.org_id = user.org_id;
  if (user.org_role) body.org_role = user.org_role;
  let resp;
  try {
    resp = await fetch(config.devAuth.token_url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    throw new Error("Could not reach the dev identity provider. Is `make dev` running?");
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || `Sign-in failed (HTTP ${resp.status}).`);
    err.field = data.error && data.error.field;
    throw err;
  }
  return { token: data.token, expires_at: data.expires_at, user_id: user.user_id };
}

/** Dev sign-in: remember the user and prove it works by minting a token. */
export async function devSignIn(userId, { admin = false } = {}) {
  const user = { user_id: userId.trim() };
  if (admin) Object.assign(user, { org_id: "org_dev", org_role: "admin" });
  devToken = await mintDevToken(user);
  sessionStorage.setItem(DEV_KEY, JSON.stringify(user));
  emit();
}

/** Mount Clerk's sign-in component into `el` (production). */
export function mountClerkSignIn(el) {
  if (!clerk) throw new Error("The sign-in service is not loaded.");
  clerk.mountSignIn(el, { routing: "virtual" });
  return () => clerk.unmountSignIn(el);
}

export async function signOut() {
  devToken = null;
  sessionStorage.removeItem(DEV_KEY);
  if (mode === "clerk" && clerk) await clerk.signOut();
  emit();
}

let signOutReason = null;

/** Why the user was last signed out ("expired" after a 401), once. */
export function takeSignOutReason() {
  const reason = signOutReason;
  signOutReason = null;
  return reason;
}

/** The API said 401: forget the session so the user signs in again. */
export function expireSession() {
  if (!isSignedIn()) return;
  signOutReason = "expired";
  devToken = null;
  sessionStorage.removeItem(DEV_KEY);
  if (mode === "clerk" && clerk) clerk.signOut().catch(() => {});
  emit();
}

export class SignedOutError extends Error {
  constructor(message = "You are signed out. Please sign in again.") {
    super(message);
    this.name = "SignedOutError";
    this.status = 401;
    this.code = "signed-out";
  }
}

/** The payload of a JWT, without verifying it (display only; the API verifies). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}
