"""A provider connection that drops once a generation request went out, through the whole gateway.

The provider may have started (and will bill) the image, so the gateway must neither send the
request again (a second image, billed too) nor let the call go free: the caller gets a 502 envelope,
the provider sees the request once, and the project is charged the call's bound, in the ledger as a
failed request. tests/providers/test_upstream_billed.py checks the same at the HTTP client; this is
what a caller and an operator see."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess

DALL_E_3_STANDARD_MICROS = 40_000  # $0.04: a 1024x1024 standard image, OpenAI's price


class DroppingServer:
    """Reads each request whole, counts it, then resets the connection without answering."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            with connection:
                self._read_one(connection)
                # RST instead of FIN: the gateway sees a reset after its request went out
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _read_one(self, connection: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        length = int(next((v for k, v in fields.items() if k.lower() == b"content-length"), b"0"))
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
        self.requests.append(head.split(b"\r\n", 1)[0].decode())

    def close(self) -> None:
        """Stop listening: a connection is refused from now on (shutdown wakes the blocked accept,
        which close alone would not, leaving the port listening)."""
        with contextlib.suppress(OSError):  # already shut
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def dropping() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


def test_a_generation_whose_connection_drops_is_sent_once_and_charged(
    tmp_path: Path, dropping: DroppingServer
) -> None:
    env = {"OPENAI_API_KEY": "sk-dropping", "OPENAI_BASE_URL": f"http://127.0.0.1:{dropping.port}/v1"}
    gateway = GatewayProcess(tmp_path, env).start()  # three attempts per upstream call, the default
    try:
        key = gateway.new_key("dropped", "--budget-usd", "1")
        body = {"model": "openai/dall-e-3", "prompt": "a lighthouse", "size": "1024x1024"}
        answered = gateway.generate(body, key)
        assert answered.status_code == 502, answered.text
        assert answered.json()["error"]["code"] == "UPSTREAM_ERROR"
        assert dropping.requests == ["POST /v1/images/generations HTTP/1.1"]
        (row,) = gateway.usage("dropped")
        assert (row["requests"], row["failed"], row["images"]) == (1, 1, 0)
        assert row["cost_micros"] == DALL_E_3_STANDARD_MICROS
        shown = gateway.project("dropped")
        assert (shown["spent_usd"], shown["reserved_usd"]) == (0.04, 0.0)
        # a call that never reached the provider (nothing listens) is not charged
        dropping.close()
        refused = gateway.generate(body, key, timeout=60)
        assert refused.status_code == 502, refused.text
        assert len(dropping.requests) == 1
        (row,) = gateway.usage("dropped")
        assert (row["requests"], row["failed"], row["cost_micros"]) == (2, 2, DALL_E_3_STANDARD_MICROS)
    finally:
        gateway.stop()
