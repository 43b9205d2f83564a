"""A flaky S3 endpoint for tests: an HTTP proxy on 127.0.0.1 that fails some requests.

`FaultProxy(upstream, fraction, seed)` forwards every request to `upstream` (moto's server,
tests/s3_server.py) and fails a seeded `fraction` of them the two ways a cloud store does:
an S3 "503 SlowDown" answer, or a connection dropped without an answer (after the request
was read: the client cannot know whether it took effect). Failures are bounded: never more
than `max_in_a_row` in a row, so a client that retries that many times always gets through.
`seen` and `failed` count requests; the proxy runs in a thread of the test's process.
`before_forward(method, path, headers)`, when given, is called before each request is sent
on: a test's way to change the store between two requests of one read.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
# Hop-by-hop headers: about one connection, never forwarded (RFC 9110 7.6.1).
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        fraction: float,
        *,
        seed: int = 0,
        max_in_a_row: int = 2,
        before_forward: Callable[[str, str, dict[str, str]], None] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.before_forward = before_forward
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fraction, self.max_in_a_row = fraction, max_in_a_row
        self.seen = self.failed = self.dropped = self.slow_downs = 0
        self._random = random.Random(seed)
        self._in_a_row = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"seen": self.seen, "failed": self.failed, "dropped": self.dropped, "slow_down": self.slow_downs}

    def _fault(self) -> str | None:
        """None (forward it), "drop" or "503", decided in arrival order from the seed."""
        with self._lock:
            self.seen += 1
            if self._in_a_row >= self.max_in_a_row or self._random.random() >= self.fraction:
                self._in_a_row = 0
                return None
            self._in_a_row += 1
            self.failed += 1
            kind = self._random.choice(("drop", "503"))
            if kind == "drop":
                self.dropped += 1
            else:
                self.slow_downs += 1
            return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on this connection: its own retry follows

            def _answer(self) -> None:
                body = self._body()
                fault = proxy._fault()
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "503":
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if proxy.before_forward is not None:
                    proxy.before_forward(self.command, self.path, headers)
                if "Transfer-Encoding" in self.headers:
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status, answer.reason)
                head = self.command == "HEAD"  # its Content-Length is the object's size, not this body's
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815 - http.server's names

        return Handler
