"""The offline switches hold in every process the tests start, not only in pytest's own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from core import offline


def test_processes_started_by_tests_have_their_sockets_limited_to_loopback():
    probe = "import core, socket; print(getattr(socket.socket.connect, '_loopback_only', False))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=os.environ)
    assert done.stdout.strip() == "True"
    unguarded = {k: v for k, v in os.environ.items() if k != offline.LOOPBACK_ONLY}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=unguarded)
    assert done.stdout.strip() == "False"  # the switch, not something else, installs the guard


def test_the_guard_refuses_before_connecting_and_lets_loopback_through():
    # A stand-in object, not a socket: if the guard let it pass, the real connect would fail with TypeError.
    outside = SimpleNamespace(family=socket.AF_INET)
    with pytest.raises(ConnectionRefusedError, match="203.0.113.7"):
        socket.socket.connect(outside, ("203.0.113.7", 443))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client.connect(server.getsockname())  # loopback passes
