"""Replicas as an operator runs them: several `gateway serve` processes on loopback behind one nginx
(Debian's package) that deals requests out round robin (issue 14, "Prove it")."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, stop
from tests.test_operate import Served, gateway_process

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_CONF = """{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream gateways {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_next_upstream off;
        location / {{ proxy_pass http://gateways; }}
    }}
}}
"""


@dataclass
class Replicas:
    url: str  # nginx, in front of them all
    served: list[Served]


@contextmanager
def nginx_in_front(ports: list[int], work: Path) -> Iterator[str]:
    if not os.path.exists(NGINX):
        pytest.skip("!!! nginx is not installed (apt-get install nginx): the replica tests are SKIPPED !!!")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # as root, nginx's worker would drop to nobody, who may not read the test's directory
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    conf = work / "nginx.conf"
    conf.write_text(_CONF.format(user=user, dir=work, servers=servers, port=port))
    process = subprocess.Popen([NGINX, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: " + (work / "error.log").read_text()) from None
                time.sleep(0.05)
        yield url
    finally:
        stop(process, timeout=5)


@contextmanager
def replicas(config: Path, count: int, work: Path, **env: str) -> Iterator[Replicas]:
    """``count`` gateway processes with one config and environment, behind nginx."""
    with ExitStack() as stack:
        served = [stack.enter_context(gateway_process(config, **env)) for _ in range(count)]
        ports = [int(s.url.rsplit(":", 1)[1]) for s in served]
        yield Replicas(stack.enter_context(nginx_in_front(ports, work)), served)
