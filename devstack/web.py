"""A static file server for frontend_dist/ at the stack's ``web_url``.

``/config.js`` is served from the stack's generated file (``.local/config.js``),
so the checked-in ``frontend_dist/config.js`` (production's) stays untouched.
Responses carry the same security headers CloudFront adds in production.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CSP = (
    "default-src 'self'; script-src 'self' https://*.clerk.accounts.dev https://*.clerk.com; "
    "connect-src 'self' http://127.0.0.1:* http://localhost:* https:; img-src 'self' data: blob: http: https:; "
    "media-src 'self' blob: http: https:; "
    "style-src 'self' 'unsafe-inline'; frame-src https://*.clerk.accounts.dev; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'"
)


class _Handler(SimpleHTTPRequestHandler):
    config_js: Path

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def send_head(self):  # type: ignore[override]
        path = self.path.split("?", 1)[0]
        if path == "/config.js" and self.config_js.exists():
            body = self.config_js.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            import io

            return io.BytesIO(body)
        return super().send_head()


class WebServer:
    """Serve ``root`` on ``host:port`` (0 = a free port) in a daemon thread."""

    def __init__(self, root: Path, config_js: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"config_js": config_js})
        self._server = ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(root)))
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
