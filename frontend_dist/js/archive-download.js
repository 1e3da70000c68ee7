// The archive download control: a format choice (a plain ZIP with manifest.csv, or a Hugging Face
// ImageFolder dataset) and a button that builds the archive on the server and starts the download.

import { buildArchive } from "./api.js";
import { h, showError, startDownload, toast, uid } from "./ui.js";

/** The archive formats the API builds (POST …/archive {"format"}), with their labels. */
export const ARCHIVE_FORMATS = [
  ["zip", "ZIP (images + manifest.csv)"],
  ["imagefolder", "ImageFolder dataset (Hugging Face)"],
];

/**
 * A format select and a download button.
 * @param {{request: () => {path: string, json?: object}, filename: (format: string) => string,
 *          label?: string, small?: boolean}} options
 *   request: what to POST (the format is added to `json`); filename: the suggested file name.
 * @returns {{element: HTMLElement, button: HTMLButtonElement, select: HTMLSelectElement}}
 */
export function archiveDownload({ request, filename, label = "Download", small = false }) {
  const id = uid("archive-format");
  const select = h(
    "select",
    { id, name: "archive_format", class: small ? "select-small" : "" },
    ARCHIVE_FORMATS.map(([value, text]) => h("option", { value, text })),
  );
  const button = h("button", { type: "button", class: `btn btn-primary${small ? " btn-small" : ""}`, text: label });
  const element = h(
    "div",
    { class: "archive-download", role: "group", "aria-label": "Download archive" },
    h("label", { for: id, class: "visually-hidden", text: "Archive format" }),
    select,
    button,
  );
  button.addEventListener("click", async () => {
    const format = select.value;
    const { path, json } = request();
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = format === "imagefolder" ? "Preparing dataset…" : "Preparing ZIP…";
    try {
      const archive = await buildArchive(path, { ...(json || {}), format });
      startDownload(archive.url, filename(format));
      toast(format === "imagefolder" ? "Your dataset download has started." : "Your ZIP download has started.", { kind: "success" });
    } catch (err) {
      showError(err, "Could not build the archive");
    } finally {
      button.textContent = label;
      button.removeAttribute("aria-busy");
      button.disabled = false;
    }
  });
  return { element, button, select };
}
