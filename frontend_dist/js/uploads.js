// Uploads straight to S3: announce the file (POST /v1/uploads), send it with the presigned POST
// (XMLHttpRequest, for upload progress), then poll the upload until the server's verdict.

import { ApiError, get, post } from "./api.js";

export const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp"];
export const ZIP_TYPES = ["application/zip", "application/x-zip-compressed"];
export const MAX_IMAGE_BYTES = 20 * 1024 * 1024; // UPLOAD_MAX_BYTES
export const MAX_ZIP_BYTES = 500 * 1024 * 1024; // ZIP_MAX_BYTES
export const CONCURRENCY = 3; // files sent at once
const EXTENSION_TYPES = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp", zip: "application/zip" };

/** The content type to announce for a File (its own type, else by extension), or null if not accepted. */
export function contentTypeOf(file) {
  const type = (file.type || "").toLowerCase();
  if (IMAGE_TYPES.includes(type) || ZIP_TYPES.includes(type)) return ZIP_TYPES.includes(type) ? "application/zip" : type;
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  return EXTENSION_TYPES[ext] || null;
}

/** Why a file cannot be uploaded, checked before anything is sent (the server checks again), or "". */
export function localProblem(file) {
  const type = contentTypeOf(file);
  if (!type) return "Not a JPEG, PNG, WebP or ZIP file.";
  const limit = type === "application/zip" ? MAX_ZIP_BYTES : MAX_IMAGE_BYTES;
  if (file.size > limit) return `Larger than ${formatBytes(limit)}.`;
  if (file.size === 0) return "The file is empty.";
  return "";
}

export function formatBytes(n) {
  const value = Number(n) || 0;
  if (value < 1024) return `${value} B`;
  if (value < 1024 * 1024) return `${(value / 1024).toFixed(1)} KiB`;
  if (value < 1024 ** 3) return `${(value / 1024 / 1024).toFixed(1)} MiB`;
  return `${(value / 1024 ** 3).toFixed(2)} GiB`;
}

/** POST the file to S3 with the presigned POST's fields; `onProgress(fraction)`. Resolves on 2xx. */
export function sendToS3(ticket, file, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(ticket.fields)) form.append(name, value);
    form.append("file", file); // last: S3 ignores fields after the file
    const xhr = new XMLHttpRequest();
    xhr.open("POST", ticket.url);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(new ApiError(xhr.status, "storage-rejected", `Storage refused the file (HTTP ${xhr.status}).`));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network-error", "The file could not be sent to storage.")));
    xhr.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    if (signal) signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(form);
  });
}

/** Poll GET /v1/uploads/{id} until it is ready or rejected; `onStatus(upload)` on every answer. */
export async function waitForVerdict(uploadId, { onStatus, signal, timeoutMs = 10 * 60 * 1000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let delay = 400;
  for (;;) {
    const upload = await get(`/v1/uploads/${encodeURIComponent(uploadId)}`, null, { signal });
    if (onStatus) onStatus(upload);
    if (upload.status === "ready" || upload.status === "rejected") return upload;
    if (Date.now() > deadline) throw new ApiError(504, "verify-timeout", "Verification is taking too long; check back later.");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 1.5, 3000);
  }
}

/**
 * Upload one file end to end. `on` receives {phase: "announcing"|"sending"|"verifying"|"done", progress?, upload?}.
 * @returns the verified upload (status ready or rejected)
 * @throws {ApiError} when the API or storage refuses it
 */
export async function uploadFile(file, { collection, on = () => {}, signal } = {}) {
  on({ phase: "announcing" });
  const body = { filename: file.name, content_type: contentTypeOf(file), size_bytes: file.size };
  if (collection) body.collection = collection;
  const ticket = await post("/v1/uploads", body, { signal });
  on({ phase: "sending", progress: 0, uploadId: ticket.upload_id });
  await sendToS3(ticket, file, { signal, onProgress: (progress) => on({ phase: "sending", progress }) });
  on({ phase: "verifying", progress: 1 });
  const isZip = body.content_type === "application/zip";
  const upload = await waitForVerdict(ticket.upload_id, {
    signal,
    timeoutMs: isZip ? 30 * 60 * 1000 : 3 * 60 * 1000,
    onStatus: (u) => on({ phase: "verifying", upload: u }),
  });
  on({ phase: "done", upload });
  return upload;
}

/** Run `task(item)` over `items`, at most `limit` at a time. */
export async function runPool(items, limit, task) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await task(item);
    }
  });
  await Promise.all(workers);
}
