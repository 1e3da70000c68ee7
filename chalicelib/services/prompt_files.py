"""Multipart job submissions: the form, and the prompt file it carries.

``POST /v1/jobs`` with ``multipart/form-data`` (RFC 7578) takes one file part named
``file`` and optional text fields: the generation parameters of ``/v1/images``
(``model``, ``width``, ``height``, ``aspect_ratio``, ``steps``, ``seed``, ``n``,
``negative_prompt``, ``guidance``, ``prompt_upsampling``, ``output_format``; each
only for the models that take it), ``name``,
``collection``, ``webhook_url``, and ``offset`` / ``limit`` to take a slice of a
file that holds more prompts than a job may (e.g. all of PartiPrompts).

Prompt files (UTF-8, a BOM is fine):

- ``.txt``: one prompt a line; blank lines are skipped;
- ``.csv`` / ``.tsv``: a header row with a ``prompt`` or ``Prompt`` column (other
  columns are ignored; RFC 4180 quoting, which PartiPrompts' TSV uses too); rows
  with an empty prompt are skipped.

The format comes from the file name's extension, else from the part's Content-Type
(``text/plain``, ``text/csv``, ``text/tab-separated-values``).
"""

from __future__ import annotations

import csv
import email.message
import email.parser
import email.policy
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import DomainError, ErrorCode, ValidationError
from chalicelib.flux.catalog import GENERATION_FIELDS, as_integer

FILE_FIELD = "file"
MAX_PARTS = 40
INT_FIELDS = frozenset({"width", "height", "steps", "seed", "n", "offset", "limit"})
FLOAT_FIELDS = frozenset({"guidance", "guidance_scale"})
BOOL_FIELDS = frozenset({"prompt_upsampling"})
#: A boolean form field is a JSON literal, as the document's ``boolean`` type says.
BOOL_VALUES = {"true": True, "false": False}
FORM_FIELDS: frozenset[str] = (GENERATION_FIELDS - {"prompt"}) | {
    "name",
    "collection",
    "webhook_url",
    "offset",
    "limit",
    FILE_FIELD,
}
FORMATS_BY_EXT = {".txt": "txt", ".csv": "csv", ".tsv": "tsv"}
FORMATS_BY_TYPE = {"text/plain": "txt", "text/csv": "csv", "text/tab-separated-values": "tsv"}
PROMPT_COLUMNS = ("prompt", "Prompt")
#: RFC 2046 section 5.1.1: a boundary is 1 to 70 of these characters, not ending in a space
BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
MAX_NUMBER_CHARS = 32  # characters of a number form field
JSON_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Part:
    """One multipart part: its form ``name``, ``filename`` (None for a text field),
    ``content_type`` and raw ``data`` bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Form:
    """A parsed job form: typed ``fields``, ``prompts`` as ``(field, label, text)``
    and the file's sha256 ``digest``."""

    fields: dict[str, Any]
    prompts: list[tuple[str, str, Any]]
    digest: str


def _bad(message: str, field: str | None = FILE_FIELD, code: str = "invalid-request") -> ValidationError:
    return ValidationError(message, field=field, code=code)


def unusable_file(message: str, field: str = FILE_FIELD) -> DomainError:
    """422 ``invalid-prompt-file``: the form is well formed (the document's schema holds)
    but the file's content cannot make a job (no prompts, a bad line, ``offset`` past its
    end, more prompts than a job takes)."""
    return DomainError(ErrorCode.INVALID_PROMPT_FILE, message, field=field)


def _header_params(content_type: str) -> email.message.Message:
    msg = email.message.Message()
    msg["content-type"] = content_type
    return msg


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a ``multipart/form-data`` body into its parts.

    Raises:
        ValidationError: 400 ``invalid-multipart`` (no boundary, malformed part, too many parts).
    """
    boundary = _header_params(content_type).get_param("boundary")
    if not isinstance(boundary, str) or not BOUNDARY_RE.fullmatch(boundary):
        raise _bad("multipart body without a valid boundary", field=None, code="invalid-multipart")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    segments = (b"\r\n" + body).split(delimiter)
    parts: list[Part] = []
    closed = False
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            closed = True
            break
        line_end = segment.find(b"\r\n")
        if line_end < 0:
            raise _bad("malformed multipart body", field=None, code="invalid-multipart")
        head, sep, data = segment[line_end + 2 :].partition(b"\r\n\r\n")
        if not sep:
            if segment[line_end + 2 :].startswith(b"\r\n"):  # a part without headers
                head, data = b"", segment[line_end + 4 :]
            else:
                raise _bad("malformed multipart part", field=None, code="invalid-multipart")
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise _bad("a multipart part has no name", field=None, code="invalid-multipart")
        filename = headers.get_filename()
        parts.append(Part(name=name, filename=filename, content_type=headers.get_content_type(), data=data))
        if len(parts) > MAX_PARTS:
            raise _bad(f"at most {MAX_PARTS} form fields", field=None, code="invalid-multipart")
    if not closed:
        raise _bad("multipart body is not terminated", field=None, code="invalid-multipart")
    return parts


def _typed(name: str, raw: bytes) -> Any:
    """A form field's value: UTF-8 text as sent; for a number field a JSON number
    (RFC 8259 grammar; an integer field takes one with a zero fractional part, as JSON
    Schema does); for a boolean field the JSON literal ``true`` or ``false``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{name} must be UTF-8 text", field=name) from None
    if name in BOOL_FIELDS:
        if text not in BOOL_VALUES:
            raise _bad(f"{name} must be true or false", field=name)
        return BOOL_VALUES[text]
    if name not in INT_FIELDS and name not in FLOAT_FIELDS:
        return text
    # at most MAX_NUMBER_CHARS: json.loads refuses an integer past 4,300 digits (ValueError) and
    # float() one past 1e308 (OverflowError); no field takes a number that long
    number = json.loads(text) if len(text) <= MAX_NUMBER_CHARS and JSON_NUMBER_RE.fullmatch(text) else None
    if name in INT_FIELDS:
        value = as_integer(number)
        if value is None:
            raise _bad(f"{name} must be an integer", field=name)
        return value
    if number is None or not math.isfinite(number):
        raise _bad(f"{name} must be a number", field=name)
    return float(number)


def file_format(filename: str | None, content_type: str | None) -> str:
    """``txt`` | ``csv`` | ``tsv`` from the file name's extension, else its Content-Type.

    Raises:
        ValidationError: 400 (field ``file``) for anything else.
    """
    name = (filename or "").lower()
    for ext, fmt in FORMATS_BY_EXT.items():
        if name.endswith(ext):
            return fmt
    if not name or "." not in name:
        fmt = FORMATS_BY_TYPE.get((content_type or "").lower())
        if fmt:
            return fmt
    raise _bad("file must be a .txt, .csv or .tsv prompt file")


def parse_prompt_file(filename: str | None, content_type: str | None, data: bytes) -> list[tuple[str, str, str]]:
    """The prompts of a file as ``("file", "line N", text)``, in file order.

    Raises:
        ValidationError: 400 (field ``file``): not a .txt/.csv/.tsv or text/plain part.
        DomainError: 422 ``invalid-prompt-file`` (field ``file``): not UTF-8 text, no prompt
            column, a malformed CSV line, or no prompts at all.
    """
    fmt = file_format(filename, content_type)
    if b"\x00" in data:
        raise unusable_file("file is not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise unusable_file("file must be UTF-8 text") from None
    prompts: list[tuple[str, str, str]] = []
    if fmt == "txt":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                prompts.append((FILE_FIELD, f"line {number}", line.strip()))
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",", strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise unusable_file("file is empty")
            names = [h.strip() for h in header]
            column = next((names.index(c) for c in PROMPT_COLUMNS if c in names), None)
            if column is None:
                lowered = [h.lower() for h in names]
                column = lowered.index("prompt") if "prompt" in lowered else None
            if column is None:
                raise unusable_file("file needs a header row with a 'prompt' or 'Prompt' column")
            for row in reader:
                value = row[column].strip() if column < len(row) else ""
                if value:
                    prompts.append((FILE_FIELD, f"line {reader.line_num}", value))
        except csv.Error as exc:
            raise unusable_file(f"file line {reader.line_num}: {exc}") from None
    if not prompts:
        raise unusable_file("file contains no prompts")
    return prompts


def parse_form(content_type: str, body: bytes, max_items: int | None = None) -> Form:
    """Parse a multipart job submission into typed fields and the file's prompts.

    ``offset`` (default 0) and ``limit`` select ``prompts[offset:offset + limit]``.

    Raises:
        ValidationError: 400 naming the field: ``unknown-field``; ``file`` missing or
            duplicated; ``limit`` out of range; a field that does not parse.
        DomainError: 422 ``invalid-prompt-file``: the file's content (see
            :func:`parse_prompt_file`), ``offset`` past its end, or more prompts than a
            job takes (without ``limit``).
    """
    from chalicelib.settings import get_settings

    maximum = max_items or get_settings().jobs_max_items
    fields: dict[str, Any] = {}
    upload: Part | None = None
    for part in parse_multipart(content_type, body):
        if part.name not in FORM_FIELDS:
            raise ValidationError(f"unknown field {part.name!r}", field=part.name, code="unknown-field")
        if part.name == FILE_FIELD:
            if upload is not None:
                raise _bad("send one prompt file")
            upload = part
            continue
        if part.name in fields:
            raise _bad(f"{part.name} is given twice", field=part.name)
        value = _typed(part.name, part.data)
        if value is not None:
            fields[part.name] = value
    if upload is None:
        raise _bad("a prompt file (form field 'file') is required")
    prompts = parse_prompt_file(upload.filename, upload.content_type, upload.data)
    offset = fields.get("offset", 0)
    if offset < 0 or offset >= len(prompts):
        raise unusable_file(f"offset must be between 0 and {len(prompts) - 1}", field="offset")
    limit = fields.get("limit")
    if limit is not None:
        if not 1 <= limit <= maximum:
            raise _bad(f"limit must be between 1 and {maximum}", field="limit")
        prompts = prompts[offset : offset + limit]
    else:
        prompts = prompts[offset:]
        if len(prompts) > maximum:
            raise unusable_file(
                f"the file has {len(prompts)} prompts; a job takes at most {maximum} "
                "(use the offset and limit fields to pick a slice)"
            )
    digest = hashlib.sha256(upload.data).hexdigest()
    return Form(fields=fields, prompts=prompts, digest=digest)
