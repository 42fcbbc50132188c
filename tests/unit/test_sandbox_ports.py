"""Port-in-use detection from /proc/net/tcp and /proc/*/fd, with real listening sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat.errors import SandboxError
from hpcplat.sandbox import Sandbox, SandboxConfig, ports


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_listening_port_is_found_with_the_process_holding_it(listener: int) -> None:
    [holder] = ports.holders([listener])
    assert holder.port == listener
    assert holder.pid == os.getpid()
    assert "python" in holder.command_line or "pytest" in holder.command_line
    assert ports.is_listening(listener)


def test_a_closed_port_is_free() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert ports.holders([port]) == []
    assert not ports.is_listening(port)


def test_up_refuses_a_taken_port_naming_it_and_its_process(listener: int, tmp_path: Path) -> None:
    sb = Sandbox(SandboxConfig(name="hpcsbp", state_dir=tmp_path, nodes=1, port_base=listener - 1))
    with pytest.raises(
        SandboxError, match=rf"port {listener} \(for slurmdbd\) is in use by pid {os.getpid()}"
    ) as info:
        sb._check_ports(running=set())
    assert "--port-base" in (info.value.hint or "")
