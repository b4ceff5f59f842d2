"""A local HTTP server for the download tests: serves files on 127.0.0.1 from a thread and can
misbehave on purpose (drop the connection part-way, ignore Range, answer 404). It records every
request it saw, with its Range header, so a test can assert what was asked for."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: int | None = None  # the first GET sends this many bytes of its body, then closes
    drops_left: int = 1
    honour_range: bool = True
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour: Behaviour

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        b = self.behaviour
        rng = self.headers.get("Range")
        b.requests.append(("GET", self.path, rng))
        data = b.files.get(self.path)
        if data is None:
            body = b"not found"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        start = 0
        if rng and b.honour_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        body = data[start:]
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if b.drop_after is not None and b.drops_left > 0:
            b.drops_left -= 1
            self.wfile.write(body[:b.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


class ModelServer:
    """with ModelServer({"/x.pkl": data}) as srv: srv.url("/x.pkl"); srv.behaviour.gets()"""

    def __init__(self, files: dict[str, bytes]):
        self.behaviour = Behaviour(files=dict(files))
        handler = type("Handler", (_Handler,), {"behaviour": self.behaviour})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "ModelServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def closed_port_url(path: str = "/x.pkl") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused): the test's 'no network'."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
