"""A stand-in for a host's web server in the demo: serves, by SNI, whatever the agent has deployed.

It reads ``live/<keyfile>/fullchain.pem`` and ``privkey.pem`` at every handshake, the way a server
that is reloaded after each deploy would, so the agent's live check sees the new certificate at once.
Demo only: it answers every request with one line and is not meant to face the internet.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class DemoTlsServer:
    """TLS on ``host:port``; ``keyfile_for(sni)`` names the keyring under ``live_root`` to serve."""

    def __init__(self, host: str, port: int, live_root: Path, keyfile_for: Callable[[str], str]) -> None:
        self.host = host
        self.live_root = live_root
        self.keyfile_for = keyfile_for
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"demo-tls-{host}", daemon=True)
        self._base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._base.sni_callback = self._choose

    def start(self) -> None:
        """Accept connections in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the socket."""
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _choose(self, conn: ssl.SSLObject, server_name: str, _ctx: ssl.SSLContext) -> int | None:
        live = self.live_root / self.keyfile_for(server_name or "")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(live / "fullchain.pem", live / "privkey.pem")
        except (OSError, ssl.SSLError):
            return None  # nothing deployed yet: the handshake fails, the live check retries
        conn.context = context
        return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with self._base.wrap_socket(raw, server_side=True) as tls:
                tls.recv(4096)
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\ncertstore demo\n"
                )
        except (OSError, ssl.SSLError) as exc:
            log.debug("demo TLS connection on %s: %s", self.host, exc)
