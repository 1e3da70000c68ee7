"""Inputs past the limits of Python's own parsers: a 4,301-digit integer (``int()`` refuses
it), an integer past 1e308 (``math.isfinite`` overflows), a multipart boundary outside
RFC 2046's characters. Each is a 400 naming its field, never an exception of another type
(which the API would answer with a 500)."""

from __future__ import annotations

import pytest

from chalicelib.errors import ValidationError
from chalicelib.flux import parse_generation_params
from chalicelib.services.pagination import parse_limit
from chalicelib.services.prompt_files import parse_form, parse_multipart

HUGE = "9" * 5_000  # over CPython's int_max_str_digits (4,300)


@pytest.mark.parametrize("raw", [HUGE, "-" + HUGE, "1" + "0" * 12, "0" * 20 + "5"])
def test_a_limit_with_thousands_of_digits_is_out_of_range(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_limit(raw)
    assert caught.value.field == "limit"


def test_a_limit_padded_with_zeros_within_twelve_characters_still_reads() -> None:
    assert parse_limit("000000000012") == 12


@pytest.mark.parametrize("guidance", [10**400, -(10**400), 10**20])
def test_a_guidance_integer_past_a_float_is_out_of_range_not_an_overflow(guidance: int) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_generation_params({"prompt": "a lighthouse at dusk", "model": "flux-2-dev", "guidance": guidance})
    assert caught.value.field == "guidance"


def form(fields: dict[str, str], boundary: str = "b0undary") -> tuple[str, bytes]:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\na lighthouse at dusk\r\n--{boundary}--\r\n"
    )
    return f"multipart/form-data; boundary={boundary}", "".join(parts).encode()


@pytest.mark.parametrize(
    ("name", "value"), [("seed", HUGE), ("offset", HUGE), ("guidance", "9" * 400), ("seed", "1e400")]
)
def test_a_form_number_past_the_parsers_is_a_400_naming_its_field(name: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_form(*form({name: value}))
    assert caught.value.field == name


@pytest.mark.parametrize("boundary", ["€uro", "x" * 71, "ends-in-space ", "semi;colon"])
def test_a_boundary_outside_rfc_2046_is_invalid_multipart(boundary: str) -> None:
    content_type, body = form({}, boundary="b0undary")
    with pytest.raises(ValidationError) as caught:
        parse_multipart(f'multipart/form-data; boundary="{boundary}"', body)
    assert caught.value.code == "invalid-multipart"


def test_a_browser_boundary_still_parses() -> None:
    content_type, body = form({"seed": "42"}, boundary="----WebKitFormBoundary7MA4YWxkTrZu0gW")
    parsed = parse_form(content_type, body)
    assert parsed.fields["seed"] == 42 and len(parsed.prompts) == 1


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    import struct
    import zlib

    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return out


def test_a_palette_png_without_its_palette_is_a_corrupt_image_not_a_crash() -> None:
    """Pillow's PNG writer raises UnboundLocalError on it: whatever a decoder raises on
    hostile bytes, the upload is refused as corrupt (a crash would retry it to the DLQ)."""
    import struct
    import zlib

    from chalicelib.storage import imaging

    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 3, 0, 0, 0)  # 2x2, 8-bit, colour type 3 (palette)
    data = _png([(b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\x00\x00\x00" * 2)), (b"IEND", b"")])
    with pytest.raises(imaging.ImageRejected) as caught:
        imaging.process_upload(data, 10_000)
    assert caught.value.code == "corrupt-image"
