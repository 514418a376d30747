"""The connection cap (issue 11) and reloads under --workers that reset no connection: idle
attackers holding more connections than the process has descriptors cost real requests nothing;
at the cap with nothing idle a request gets 503 with Retry-After; 20 SIGHUPs to a supervisor with
keep-alive clients sending all along lose no request and replace each worker only a few times."""

from __future__ import annotations

import collections
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import Simulator, config_text, start_gateway
from tests.test_connections import REFUSED, address, answer, opened
from tests.test_metrics import Delta
from tests.test_operate import gateway_process, wait_until

USER = {"role": "user", "content": "hi"}


def _thousand_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_1100_idle_connections_under_a_1024_descriptor_limit_cost_real_requests_nothing(sim: Simulator,
                                                                                        tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with gateway_process(path, preexec_fn=_thousand_descriptors) as served:
        pid = served.process.pid
        delta = Delta(served.url)
        descriptors: list[int] = []
        done = threading.Event()

        def count_descriptors() -> None:
            while not done.wait(0.02):
                descriptors.append(len(os.listdir(f"/proc/{pid}/fd")))

        counter = threading.Thread(target=count_descriptors)
        counter.start()
        idle = [socket.create_connection(address(served.url)) for _ in range(1100)]
        outcomes: collections.Counter[str] = collections.Counter()
        try:
            # clients arriving on new connections, and one keeping its connection alive
            fresh = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(base_url=served.url, timeout=5, limits=fresh) as new, \
                    httpx.Client(base_url=served.url, timeout=5) as kept:
                for _ in range(40):
                    for http in (new, kept):
                        try:
                            response = http.post("/v1/chat/completions", json={"model": "glm-toapis",
                                                                               "messages": [USER]})
                        except httpx.TransportError as exc:
                            outcomes[type(exc).__name__] += 1
                        else:
                            retry = response.status_code == 503 and response.headers.get("retry-after") == "1"
                            outcomes["503 Retry-After" if retry else str(response.status_code)] += 1
        finally:
            done.set()
            counter.join(5)
            for sock in idle:
                sock.close()
        assert set(outcomes) <= {"200", "503 Retry-After"} and outcomes["200"] >= 70, outcomes
        assert descriptors and max(descriptors) < 1024, max(descriptors)
        # the cap (1024 - 512 upstream - 64) made room by closing the oldest idle attackers
        assert delta(REFUSED, reason="connection_cap") >= 1100 - (1024 - 512 - 64)
        assert any(r["reason"] == "connection_cap" for r in served.logged("client_refused"))


def test_at_the_cap_with_nothing_idle_a_request_gets_503_and_past_the_margin_a_connection_is_closed(
        sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    sim.control(provider="toapis", words=15, chunk_delay_ms=100)
    with start_gateway(path, max_connections=1) as url:
        delta = Delta(url)
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=10,
                          json={"model": "glm-toapis", "messages": [USER], "stream": True}) as response:
            chunks = response.iter_raw()
            next(chunks)  # the one connection the cap allows has its request in the app: none is idle
            waiting = [opened(url) for _ in range(32)]  # over the cap, within the margin: they wait
            assert answer(opened(url), timeout=2) == b""  # past the margin: closed at once
            waiting[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            busy = answer(waiting[0])
            assert busy.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1\r\n" in busy, busy
            assert b'"code":"too_many_connections"' in busy and b"connection: close" in busy
            assert b"".join(chunks).endswith(b"data: [DONE]\n\n")  # the stream in flight is untouched
        for sock in waiting:
            sock.close()
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, what="room again", timeout=5)
        assert delta(REFUSED, reason="connection_cap") == 2


def test_twenty_hups_under_two_workers_lose_no_request_and_are_coalesced(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with gateway_process(path, "--workers", "2") as served:
        statuses: collections.Counter[int] = collections.Counter()
        errors: list[str] = []
        stop = threading.Event()

        def client() -> None:
            # keep-alive, no retries: a connection an old worker resets is a lost request
            with httpx.Client(base_url=served.url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        statuses[http.post("/v1/chat/completions", json={"model": "glm-toapis",
                                                                         "messages": [USER]}).status_code] += 1
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))

        clients = [threading.Thread(target=client) for _ in range(20)]
        for thread in clients:
            thread.start()
        started = time.monotonic()
        time.sleep(2)
        for _ in range(20):
            served.process.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        time.sleep(max(0.0, 20 - (time.monotonic() - started)))
        stop.set()
        for thread in clients:
            thread.join(15)
        workers_started = sum("Started server process" in line for line in served.lines) - 2
        assert errors == [] and set(statuses) == {200}, (errors[:5], len(errors), statuses)
        assert sum(statuses.values()) > 1000
        assert 2 <= workers_started <= 6, workers_started  # one reload, and one more for the HUPs during it


def test_a_request_on_an_idle_connection_during_shutdown_is_answered_with_connection_close(
        sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with gateway_process(path) as served:
        sock = opened(served.url, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):  # the whole first response, the connection kept
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in first
        served.process.send_signal(signal.SIGTERM)  # the listener closes; this idle connection stays open
        time.sleep(0.5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        second = answer(sock)
        assert second.startswith(b"HTTP/1.1 200 ") and b"connection: close" in second, second
        served.process.wait(10)
