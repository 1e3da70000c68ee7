// Parse a prompt list the way the API does, so the Batch screen can show the prompt count and the
// file's problems before anything is submitted. The API validates again; its answer wins.
//
// - .txt: one prompt per line; blank lines are skipped.
// - .csv / .tsv: RFC 4180 quoting; a header row with a "prompt" or "Prompt" column (any case) is required;
//   other columns are ignored and rows with an empty prompt are skipped.

// The API's limits (GET /v1/limits, applied with setLimits); these defaults are the server's
// defaults, used until (or if) the API answers.
export const limits = { maxPrompts: 500, maxPromptChars: 2000, maxFileBytes: 2 * 1024 * 1024 };

/** Take the limits from a GET /v1/limits answer ({jobs: {max_items, max_body_bytes}, prompt: {max_chars}}). */
export function setLimits(fromApi) {
  const positive = (n) => Number.isInteger(n) && n > 0;
  if (positive(fromApi?.jobs?.max_items)) limits.maxPrompts = fromApi.jobs.max_items;
  if (positive(fromApi?.jobs?.max_body_bytes)) limits.maxFileBytes = fromApi.jobs.max_body_bytes;
  if (positive(fromApi?.prompt?.max_chars)) limits.maxPromptChars = fromApi.prompt.max_chars;
  return limits;
}

/** Split delimited text into rows of fields (quotes, doubled quotes, CRLF). */
export function parseDelimited(text, delimiter) {
  const rows = [];
  let row = [];
  let fieldText = "";
  let quoted = false;
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          fieldText += '"';
          i += 1;
        } else {
          quoted = false;
        }
      } else {
        fieldText += ch;
      }
    } else if (ch === '"' && fieldText === "") {
      quoted = true;
    } else if (ch === delimiter) {
      row.push(fieldText);
      fieldText = "";
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i += 1;
      row.push(fieldText);
      rows.push(row);
      row = [];
      fieldText = "";
    } else {
      fieldText += ch;
    }
    i += 1;
  }
  if (quoted) rows.unclosedQuote = true;
  if (fieldText !== "" || row.length) {
    row.push(fieldText);
    rows.push(row);
  }
  return rows;
}

/**
 * @param {string} text the file's text
 * @param {string} filename decides the format by extension
 * @returns {{prompts: {line: number, prompt: string}[], errors: string[], format: string, column: string|null}}
 */
export function parsePromptFile(text, filename = "prompts.txt") {
  const ext = (filename.split(".").pop() || "").toLowerCase();
  const errors = [];
  const prompts = [];
  let column = null;
  text = text.replace(/^\uFEFF/, "");
  if (ext === "csv" || ext === "tsv") {
    const rows = parseDelimited(text, ext === "csv" ? "," : "\t");
    if (rows.unclosedQuote) errors.push("The file ends inside a quoted field (a \" is not closed).");
    const header = rows[0] || [];
    const index = header.findIndex((cell) => cell.trim().toLowerCase() === "prompt");
    if (!rows.length) {
      errors.push("The file is empty.");
      return { prompts, errors, format: ext, column };
    }
    if (index < 0) {
      errors.push(`Line 1: the header row needs a “prompt” or “Prompt” column (found: ${header.map((c) => c.trim()).filter(Boolean).join(", ") || "nothing"}).`);
      return { prompts, errors, format: ext, column };
    }
    column = header[index].trim();
    for (let r = 1; r < rows.length; r += 1) {
      const value = (rows[r][index] || "").trim();
      if (!value) continue;
      prompts.push({ line: r + 1, prompt: value });
    }
  } else if (ext === "txt") {
    text.split(/\r\n|\r|\n/).forEach((line, i) => {
      const value = line.trim();
      if (value) prompts.push({ line: i + 1, prompt: value });
    });
  } else {
    errors.push(`Unsupported file type ".${ext}": use .txt, .csv or .tsv.`);
    return { prompts: [], errors, format: ext, column };
  }
  return { ...checkPrompts(prompts, errors), format: ext, column };
}

/** Check prompts against the API's limits; returns {prompts, errors}. */
export function checkPrompts(prompts, errors = []) {
  for (const p of prompts) {
    if (p.prompt.length > limits.maxPromptChars) {
      errors.push(`Line ${p.line}: the prompt is ${p.prompt.length} characters; at most ${limits.maxPromptChars} are allowed.`);
    }
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(p.prompt)) errors.push(`Line ${p.line}: the prompt contains control characters.`);
  }
  if (!prompts.length && !errors.length) errors.push("No prompts found.");
  if (prompts.length > limits.maxPrompts) errors.push(`${prompts.length} prompts: a batch holds at most ${limits.maxPrompts}.`);
  return { prompts, errors };
}

/** Prompts pasted one per line. */
export function parsePasted(text) {
  const prompts = [];
  text.split(/\r\n|\r|\n/).forEach((line, i) => {
    const value = line.trim();
    if (value) prompts.push({ line: i + 1, prompt: value });
  });
  if (!prompts.length) return { prompts, errors: [] };
  return checkPrompts(prompts);
}
