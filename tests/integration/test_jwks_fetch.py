"""The JWKS GET against servers on loopback: the dev IdP, and scripted ones that drip-feed,
oversize, redirect or present a certificate nobody trusts. Every fetch must end by its
deadline and read no more than the cap."""

from __future__ import annotations

import datetime
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.auth.jwks import MAX_JWKS_BYTES, JwksFetchError, fetch_jwks, parse_signing_keys
from devstack.idp import DevIdentityProvider


def timed_failure(url: str, timeout_s: float) -> tuple[JwksFetchError, float]:
    started = time.monotonic()
    with pytest.raises(JwksFetchError) as caught:
        fetch_jwks(url, timeout_s)
    return caught.value, time.monotonic() - started


def test_the_dev_idps_jwks_is_fetched_and_parsed(idp: DevIdentityProvider) -> None:
    before = idp.jwks_fetches
    keys = parse_signing_keys(fetch_jwks(idp.jwks_url, 3.0))
    assert keys and all(key.key_size >= 2048 for key in keys.values())
    assert idp.jwks_fetches == before + 1


def test_a_body_dripped_a_byte_at_a_time_ends_at_the_deadline(serve) -> None:
    def drip(conn, server):
        server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        for _ in range(200):  # 10 s of bytes, each inside any per-read timeout
            time.sleep(0.05)
            server.send(conn, b" ")

    server = serve(drip)
    err, elapsed = timed_failure(f"http://127.0.0.1:{server.port}/.well-known/jwks.json", 0.6)
    assert "deadline" in str(err)
    assert elapsed < 1.5  # the deadline, plus scheduling slack; the drip would take 10 s


def test_headers_dripped_a_byte_at_a_time_end_at_the_deadline(serve) -> None:
    def drip(conn, server):
        server.send(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(200):
            time.sleep(0.05)
            server.send(conn, b"a")

    server = serve(drip)
    err, elapsed = timed_failure(f"http://127.0.0.1:{server.port}/jwks.json", 0.6)
    assert "deadline" in str(err)
    assert elapsed < 1.5


def test_a_body_over_the_cap_is_refused_without_reading_it_all(serve) -> None:
    length = 100 * 1024 * 1024  # announced and, unless the client hangs up, sent
    chunk = b"a" * (64 * 1024)

    def huge(conn, server):
        server.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
        server.send(conn, b'{"keys": [], "pad": "')
        while server.sent < length:
            server.send(conn, chunk)

    server = serve(huge)
    err, _ = timed_failure(f"http://127.0.0.1:{server.port}/jwks.json", 3.0)
    assert "over" in str(err)
    wait_until = time.monotonic() + 5
    while server.alive and time.monotonic() < wait_until:  # the send that fails once the client hung up
        time.sleep(0.01)
    assert not server.alive
    assert server.sent < length // 4  # what the loopback's socket buffers held, not the 100 MB


def test_a_chunked_body_up_to_the_cap_is_read_whole(serve) -> None:
    body = b'{"keys": [], "pad": "' + b"a" * (MAX_JWKS_BYTES - 100) + b'"}'

    def chunked(conn, server):
        server.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 5000):
            part = body[start : start + 5000]
            server.send(conn, f"{len(part):x}\r\n".encode() + part + b"\r\n")
        server.send(conn, b"0\r\n\r\n")

    server = serve(chunked)
    data = fetch_jwks(f"http://127.0.0.1:{server.port}/jwks.json", 3.0)
    assert data["keys"] == [] and len(data["pad"]) == MAX_JWKS_BYTES - 100


def test_a_redirect_is_not_followed(serve, idp: DevIdentityProvider) -> None:
    def redirect(conn, server):
        server.send(conn, f"HTTP/1.1 302 Found\r\nLocation: {idp.jwks_url}\r\nContent-Length: 0\r\n\r\n".encode())

    server = serve(redirect)
    before = idp.jwks_fetches
    err, _ = timed_failure(f"http://127.0.0.1:{server.port}/jwks.json", 3.0)
    assert "HTTP 302" in str(err)
    assert idp.jwks_fetches == before


def test_json_that_is_not_an_object_and_bytes_that_are_not_json_are_refused(serve) -> None:
    answers = iter([b"[1, 2]", b"\xff\xfe not json", b"[" * 30_000 + b"]" * 30_000])

    def odd(conn, server):
        body = next(answers)
        server.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    server = serve(odd)
    url = f"http://127.0.0.1:{server.port}/jwks.json"
    assert "JSON object" in str(timed_failure(url, 3.0)[0])
    assert "not JSON" in str(timed_failure(url, 3.0)[0])
    assert "not JSON" in str(timed_failure(url, 3.0)[0])  # nested past the parser's depth, under the cap


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/jwks.json", "http:///jwks.json", "http://h:x/", "https://[::1/jwks"]
)
def test_a_url_that_is_not_http_is_refused_before_any_connection(url: str) -> None:
    err, elapsed = timed_failure(url, 3.0)
    assert "not http(s)" in str(err) and elapsed < 0.5


def test_https_checks_the_certificate(serve, tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    body = b'{"keys": []}'

    def answer(conn, server):
        server.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    server = serve(answer, wrap=context)
    err, _ = timed_failure(f"https://localhost:{server.port}/jwks.json", 3.0)
    assert "SSLCertVerificationError" in str(err)  # self-signed: not in the system trust store
