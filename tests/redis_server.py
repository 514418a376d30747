"""A real redis-server on loopback for the tests of the shared state (Debian's ``redis-server``,
which ``make test-servers`` installs): one for the session, as the ``redis_url`` fixture, and
:func:`redis_server` for a test that needs one of its own to stop."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

BINARY = "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextmanager
def redis_server(port: int | None = None, *options: str) -> Iterator[str]:
    """A fresh redis-server that keeps nothing on disk (on ``port``, or a free one; ``options``
    more of its command line, ``{dir}`` in them its working directory), as its URL; stopped on
    leaving."""
    binary = shutil.which(BINARY)
    if binary is None:
        pytest.skip(f"!!! {BINARY} is not installed (apt-get install redis-server, or `make test-servers` as root): "
                    "the Redis tests of the shared state are SKIPPED !!!")
    with tempfile.TemporaryDirectory(prefix="glmgw-redis-") as workdir:
        port = port or free_port()
        server = subprocess.Popen([binary, "--save", "", "--appendonly", "no", "--port", str(port),
                                   "--bind", "127.0.0.1", "--dir", workdir,
                                   *(option.replace("{dir}", workdir) for option in options)],
                                  cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not _pings(port):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{binary} on port {port} did not answer PING (exit code {server.poll()})")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url
