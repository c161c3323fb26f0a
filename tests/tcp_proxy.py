"""A loopback TCP proxy that a test can cut, as a database server restarting looks to clients.

Clients connect to the proxy's port; it forwards bytes both ways to the real server. ``cut``
drops every connection at once and refuses new ones for a moment, then listens again on the
same port: the shared PostgreSQL server itself is never touched.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit


class TCPProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self.cuts = 0

    def start(self) -> TCPProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()
        listener.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for each in (src, dst):
                self._drop(each)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _stop_listening(self) -> None:
        self._listener = None  # the accept loop closes it within 0.1 s
        with self._lock:
            live = list(self._sockets)
        for sock in live:
            self._drop(sock)

    def cut(self, down_for: float) -> None:
        """Drop every connection now and refuse connections for ``down_for`` seconds."""
        self._stop_listening()
        self.cuts += 1

        def back() -> None:
            if not self._closed:
                self.start()

        threading.Timer(down_for, back).start()

    def close(self) -> None:
        self._closed = True
        self._stop_listening()


@contextmanager
def proxy_for(url: str) -> Iterator[tuple[TCPProxy, str]]:
    """A proxy in front of the server in ``url``, and the same URL through the proxy."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    proxy = TCPProxy(host, port).start()
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    through = parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}").geturl()
    try:
        yield proxy, through
    finally:
        proxy.close()
