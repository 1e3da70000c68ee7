"""One webhook POST with a wall-clock deadline and a cap on the bytes read back.

A receiver is untrusted: it may accept the connection and then answer one byte every
few seconds, announce a huge ``Content-Length``, or stream without end. ``requests``'
``timeout`` bounds each socket operation, not the exchange, so a drip-feeding receiver
could hold a worker for as long as it liked. This module speaks the little HTTP/1.1 a
webhook needs over a plain socket instead:

- every socket operation (connect, TLS handshake, send, each receive) gets the time
  left until one deadline as its timeout (CPython applies a socket timeout to a whole
  ``connect`` / ``sendall`` / ``do_handshake`` call), and the receive loop checks the
  deadline itself, so the exchange ends by ``deadline_s`` whatever the receiver does;
- it reads at most ``max_bytes`` of the answer (status line, headers and body
  together) and then closes the connection: the status code is all that matters;
- the host name was resolved before (by the SSRF checks), outside this deadline;
- it connects to the address that was checked (no second DNS lookup), sends
  ``Connection: close``, never follows redirects and ignores proxy settings; TLS uses
  the system trust store with SNI and host-name verification for the URL's host.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r?\n")
# at most 19 digits: int() refuses a string of 4,301, and no answer read here is that long
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,19})[ \t]*\r\n", re.IGNORECASE)
RECV_CHUNK = 1024


class DeliveryError(Exception):
    """The exchange failed: connection, TLS, deadline or an unreadable answer.

    ``reason`` is short and client-safe (it is stored on the job): ``connect``, ``tls``,
    ``deadline``, ``closed``, ``bad-response`` or ``bad-request`` (a header with CR/LF).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: the HTTP ``status`` and how many bytes were read (``bytes_read``,
    never more than the cap); ``truncated`` when the answer was longer than the cap."""

    status: int
    bytes_read: int
    truncated: bool


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeliveryError("deadline")
    return left


def _request_bytes(url: str, host: str, port: int, scheme: str, body: bytes, headers: dict[str, str]) -> bytes:
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    default_port = 443 if scheme == "https" else 80
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise DeliveryError("bad-request")
    try:  # an ASCII URI is all a request line carries (webhook URLs are checked ASCII at submit)
        return "\r\n".join(lines).encode("ascii") + body
    except UnicodeEncodeError:
        raise DeliveryError("bad-request") from None


def _answer_complete(data: bytes, head_end: int) -> bool:
    """Whether ``data`` holds the whole answer (by Content-Length or a final chunk)."""
    head = data[:head_end]
    match = CONTENT_LENGTH.search(head + b"\r\n")
    if match is not None:
        return len(data) - (head_end + 4) >= int(match.group(1))
    return data.endswith(b"0\r\n\r\n")


def post(
    url: str,
    *,
    scheme: str,
    host: str,
    port: int,
    address: str,
    body: bytes,
    headers: dict[str, str],
    deadline_s: float,
    max_bytes: int,
) -> Answer:
    """POST ``body`` to ``address``:``port`` for ``url`` and read at most ``max_bytes`` back.

    Args:
        url: the checked URL (path and query are sent).
        scheme: ``https`` or ``http``.
        host: the URL's host name (Host header, SNI, certificate check).
        port: TCP port.
        address: the IP address to connect to (already checked by the caller).
        body: the request body, bytes.
        headers: extra request headers (names and values without CR/LF).
        deadline_s: seconds the whole exchange may take (wall clock).
        max_bytes: bytes of the answer read at most.

    Returns:
        The :class:`Answer` (any status; the caller decides what counts as delivered).

    Raises:
        DeliveryError: connection, TLS, deadline or a malformed status line.
    """
    deadline = time.monotonic() + deadline_s
    request = _request_bytes(url, host, port, scheme, body, headers)
    try:
        sock = socket.create_connection((address, port), timeout=_remaining(deadline))
    except DeliveryError:
        raise
    except OSError:
        raise DeliveryError("deadline" if time.monotonic() >= deadline else "connect") from None
    try:
        if scheme == "https":
            context = ssl.create_default_context()
            try:
                sock.settimeout(_remaining(deadline))
                sock = context.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError):
                raise DeliveryError("tls") from None
        return _exchange(sock, request, deadline, max_bytes)
    except DeliveryError:
        raise
    except TimeoutError:
        raise DeliveryError("deadline") from None
    except OSError:
        raise DeliveryError("deadline" if time.monotonic() >= deadline else "closed") from None
    finally:
        sock.close()


def _exchange(sock: socket.socket, request: bytes, deadline: float, max_bytes: int) -> Answer:
    sock.settimeout(_remaining(deadline))
    sock.sendall(request)
    data = b""
    head_end = -1
    while len(data) < max_bytes:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(min(RECV_CHUNK, max_bytes - len(data)))
        if not chunk:
            break
        data += chunk
        if head_end < 0:
            head_end = data.find(b"\r\n\r\n")
        if head_end >= 0 and _answer_complete(data, head_end):
            break
    match = STATUS_LINE.match(data)
    if match is None:
        raise DeliveryError("bad-response")
    truncated = len(data) >= max_bytes and not (head_end >= 0 and _answer_complete(data, head_end))
    return Answer(status=int(match.group(1)), bytes_read=len(data), truncated=truncated)
