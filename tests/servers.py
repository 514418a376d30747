"""Real HTTP servers on loopback for tests: uvicorn on a free port, in a thread of its own.

Used the way uvicorn's own suite does it: start, wait until it listens, yield its URL, stop.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

#: the uvicorn.Server behind each URL that serve() yields, while it runs (its server_state tells a
#: test which requests are still being handled)
SERVERS: dict[str, uvicorn.Server] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app: Any, *, port: int | None = None, **config: Any) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 until the block ends; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto", **config)
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    SERVERS[url] = server
    try:
        yield url
    finally:
        SERVERS.pop(url, None)
        server.should_exit = True
        thread.join(timeout=10)


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Ask a server process to stop; kill it if it does not within ``timeout``."""
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
