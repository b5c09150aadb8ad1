"""Port reservation of ``serve --workers`` (server/workers.py)."""

from __future__ import annotations

import socket

import pytest

from switchyard.proxy.gateway import PortInUse
from switchyard.server.workers import reserve_port


def test_reserve_port_refuses_a_port_another_server_listens_on() -> None:
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(PortInUse, match="cannot listen on 127.0.0.1"):
            reserve_port("127.0.0.1", plain.getsockname()[1])
    with socket.socket() as sharing:  # a server that allows SO_REUSEPORT too: the bind works, the probe does not
        sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sharing.bind(("127.0.0.1", 0))
        sharing.listen()
        with pytest.raises(PortInUse, match="another server accepts connections there"):
            reserve_port("127.0.0.1", sharing.getsockname()[1])
    reserved = reserve_port("127.0.0.1", 0)
    try:
        port = reserved.getsockname()[1]
        assert port > 0
        with socket.socket() as worker:  # what each worker's gRPC server does
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()
    finally:
        reserved.close()
