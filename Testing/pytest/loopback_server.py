"""A real HTTP server on 127.0.0.1 for the download tests (no mock of the network stack)."""

from __future__ import annotations

import http.server
import threading
import time


class LoopbackServer:
    """Serves ``files`` ({name: bytes}) under ``url`` in one of several ways: ``mode`` "ok", "truncated" (the
    full Content-Length, half the body, then the connection closes), "corrupt" (bytes flipped), "slow"."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.mode = "ok"
        self.requests: list[str] = []
        self.first_chunk_sent = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                if server.mode == "truncated":  # says the whole length, sends half, closes
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if server.mode == "corrupt":  # complete, but bytes flipped in the middle
                    body = body[:1000] + bytes(b ^ 0xFF for b in body[1000:5000]) + body[5000:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 1 << 16
                try:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start:start + step])
                        self.wfile.flush()
                        server.first_chunk_sent.set()
                        if server.mode == "slow":
                            time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped (cancel)
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
