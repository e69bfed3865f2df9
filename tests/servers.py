"""Real servers on loopback for the storage tests: an HTTP file server with Range support,
moto's S3 server, and a TCP proxy that resets connections mid-transfer at random."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder; honours `Range: bytes=a-b` with 206 Partial Content. `chunk_delay`
    seconds pass between 64 KiB chunks (a slow link, so transfers overlap in time)."""

    chunk_delay = 0.0

    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not os.path.isfile(path) or match is None:
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        while remaining > 0:
            chunk = source.read(min(65536, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)
            if self.chunk_delay:
                time.sleep(self.chunk_delay)


class HTTPFileServer:
    def __init__(self, root: str, chunk_delay: float = 0.0):
        handler_class = type("Handler", (RangeHandler,), {"chunk_delay": chunk_delay})
        handler = lambda *a, **kw: handler_class(*a, directory=root, **kw)  # noqa: E731
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class EndlessHandler(RangeHandler):
    """Answers every GET with 200, no Content-Length and a body of `{"` and spaces that never
    ends (bounded at 8 GiB, so the test server stops by itself), as a broken or hostile
    server would; HEAD with the same headers."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()
        block = b" " * (1 << 20)
        try:
            self.wfile.write(b'{"')
            for _ in range(8 << 10):
                self.wfile.write(block)
        except OSError:  # the client stopped reading
            pass


class EndlessServer(HTTPFileServer):
    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), EndlessHandler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


class FaultyProxy:
    """Forwards loopback TCP to `upstream_port`; each response chunk has probability
    `reset_p` of ending the connection with a TCP reset (seeded, so runs repeat). The first
    `reset_first` responses are reset before their first byte: deterministic faults, of the
    kind a client library's own retry would take (and hide) if it were on."""

    def __init__(self, upstream_port: int, reset_p: float, seed: int = 0, reset_first: int = 0):
        self.upstream, self.reset_p, self.reset_first = upstream_port, reset_p, reset_first
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.resets = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.sock.close()

    def _accept(self):
        while self.running:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, response: bool):
        sent = False  # a byte of this connection's responses forwarded yet
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if response:
                    with self.lock:
                        first = self.reset_first > 0 and not sent
                        self.reset_first -= first
                        reset = first or self.rng.random() < self.reset_p
                        self.resets += reset
                    if reset:
                        dst.send(data[: 0 if first else len(data) // 2])
                        for s in (dst, src):  # RST, not FIN: linger 0 then close
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            s.close()
                        return
                dst.sendall(data)
                sent = True
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


SECRET = "SECRETvidshard0123456789abcdef"  # the fake S3 secret key: tests check it never leaks


def use_endpoint(port: int) -> None:
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a new endpoint: no cached client


def upload(local: str, prefix: str, port: int) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    for name in os.listdir(local):
        client.upload_file(os.path.join(local, name), "vidshard", f"{prefix}/{name}")
