"""The start-up port probe refuses a port something listens on, and only that."""

from __future__ import annotations

import socket

import pytest

from service.runtime.supervisor import StartupError, ensure_port_free


def test_a_listening_port_is_taken() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(StartupError, match="is in use"):
            ensure_port_free("127.0.0.1", listener.getsockname()[1], "HTTP")


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free() -> None:
    # The side that closes first keeps TIME_WAIT: here the server, as when a gateway stops.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
        client.recv(1)  # the server's FIN arrived
        client.close()
    ensure_port_free("127.0.0.1", port, "HTTP")
