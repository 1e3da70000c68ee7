// The one fetch wrapper: base URL, a bearer token before every call, JSON in and out, and every
// error as an ApiError carrying the API's {"error": {"code", "message", "field"}}.

import { expireSession, getToken } from "./auth.js";

const config = window.PROMPTCANVAS_CONFIG || {};
const BASE = String(config.apiBaseUrl || "").replace(/\/+$/, "");

export class ApiError extends Error {
  constructor(status, code, message, { field = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

/** The absolute URL of an API path with query parameters (empty ones left out). */
export function apiUrl(path, query) {
  const url = new URL(BASE + path, location.href);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  return url.toString();
}

/**
 * Call the API.
 * @param {string} path e.g. "/v1/images"
 * @param {{method?: string, json?: any, form?: FormData, query?: object, signal?: AbortSignal}} options
 * @returns the decoded JSON body (null for 204)
 * @throws {ApiError} with the API's message; status 0 when the API cannot be reached
 */
export async function api(path, { method = "GET", json, form, query, signal } = {}) {
  const url = apiUrl(path, query);
  for (let attempt = 0; ; attempt += 1) {
    let token;
    try {
      token = await getToken({ force: attempt > 0 });
    } catch (err) {
      if (err.status === 401) {
        expireSession();
        throw new ApiError(401, "signed-out", err.message);
      }
      throw new ApiError(0, "sign-in-failed", err.message);
    }
    const headers = { Authorization: `Bearer ${token}` };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    let resp;
    try {
      resp = await fetch(url, { method, headers, body, signal, mode: "cors" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "network-error", "Could not reach the PromptCanvas API. Check your connection and try again.");
    }
    if (resp.status === 401 && attempt === 0) continue; // one retry with a freshly minted token
    const data = await readBody(resp);
    if (resp.ok) return data;
    const error = (data && data.error) || {};
    const retryAfter = resp.headers.get("Retry-After");
    const apiError = new ApiError(resp.status, error.code || `http-${resp.status}`, error.message || fallbackMessage(resp), {
      field: error.field || null,
      retryAfter: retryAfter ? Number(retryAfter) : null,
    });
    if (resp.status === 401) {
      apiError.message = `${apiError.message} — please sign in again.`;
      expireSession();
    }
    throw apiError;
  }
}

async function readBody(resp) {
  if (resp.status === 204) return null;
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return resp.ok ? text : null;
  }
}

function fallbackMessage(resp) {
  if (resp.status === 429) return "Too many requests; please wait a moment and try again.";
  if (resp.status >= 500) return `The API failed (HTTP ${resp.status}). Please try again.`;
  return `The request failed (HTTP ${resp.status}).`;
}

export const get = (path, query, options = {}) => api(path, { ...options, query });
export const post = (path, json, options = {}) => api(path, { ...options, method: "POST", json });
export const del = (path, options = {}) => api(path, { ...options, method: "DELETE" });
export const put = (path, json, options = {}) => api(path, { ...options, method: "PUT", json });

/** A GET of `path` fetched once per page load (a failure is forgotten, so the next call tries again). */
function once(path) {
  let promise = null;
  return () => {
    if (!promise) {
      promise = get(path).catch((err) => {
        promise = null;
        throw err;
      });
    }
    return promise;
  };
}

/** The model catalog (GET /v1/models), fetched once per page load. */
export const models = once("/v1/models");

/** The deployment's input limits (GET /v1/limits), fetched once per page load. */
export const limits = once("/v1/limits");

/** Create a ZIP archive (POST to `path`), wait until it is ready, and return its URL. */
export async function buildArchive(path, json, { onStatus, signal } = {}) {
  let archive = await post(path, json, { signal });
  const id = archive.archive_id || archive.id;
  const deadline = Date.now() + 5 * 60 * 1000;
  let delay = 500;
  while (!archive.url) {
    if (["failed", "error", "expired"].includes(archive.status)) {
      throw new ApiError(500, "archive-failed", archive.error?.message || archive.error || "The ZIP archive could not be built.");
    }
    if (Date.now() > deadline) throw new ApiError(504, "archive-timeout", "The ZIP archive is taking too long. Try again later.");
    if (onStatus) onStatus(archive);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 1.5, 3000);
    archive = await get(`/v1/archives/${encodeURIComponent(id)}`, null, { signal });
  }
  return archive;
}
