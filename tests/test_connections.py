"""Client connections (issue 11): idle, header, body and write timeouts, header limits,
Transfer-Encoding, every refusal logged and counted. `gateway serve` processes on loopback with
lowered timeouts; the attackers are raw sockets. The connection cap and reloads under --workers:
tests/test_connection_cap.py."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import Simulator, config_text, start_gateway
from tests.servers import SERVERS
from tests.test_metrics import Delta, scrape, value
from tests.test_operate import Served, gateway_process, wait_until

LOW = {"GATEWAY_CLIENT_IDLE_TIMEOUT": "1", "GATEWAY_CLIENT_HEADER_TIMEOUT": "1", "GATEWAY_CLIENT_BODY_TIMEOUT": "1",
       "GATEWAY_CLIENT_BODY_DEADLINE": "3", "GATEWAY_CLIENT_WRITE_TIMEOUT": "1"}
REASONS = ("idle_timeout", "header_timeout", "body_timeout", "header_too_large", "too_many_headers",
           "connection_cap", "write_timeout", "bad_transfer_encoding")
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
BODY_OWED = CHAT + b"Content-Length: 100000\r\n\r\n"
STREAM = orjson.dumps({"model": "glm-toapis", "messages": [{"role": "user", "content": "hi"}], "stream": True})
REFUSED = "gateway_client_refused_total"


@pytest.fixture(scope="module")
def served(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("connections") / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with gateway_process(path, **LOW) as served:
        yield served


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def opened(url: str, data: bytes = b"", receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting: the window the gateway may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(address(url))
    if data:
        sock.sendall(data)
    return sock


def answer(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the gateway sends until it closes (a reset after its answer included)."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@dataclass
class Loris:
    sock: socket.socket
    drip: bytes  # sent every DRIP seconds while open
    opened: float
    received: bytes = b""
    closed_after: float | None = None


DRIP = 0.3


def besiege(lorises: list[Loris], seconds: float) -> None:
    """Drip and read until every connection is closed or ``seconds`` pass."""
    selector = selectors.DefaultSelector()
    for loris in lorises:
        loris.sock.setblocking(False)
        selector.register(loris.sock, selectors.EVENT_READ, loris)
    end = time.monotonic() + seconds
    next_drip = time.monotonic() + DRIP
    while selector.get_map() and time.monotonic() < end:
        for key, _ in selector.select(timeout=0.05):
            loris = key.data
            try:
                chunk = loris.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            loris.received += chunk
            if not chunk:
                loris.closed_after = time.monotonic() - loris.opened
                selector.unregister(loris.sock)
        if time.monotonic() >= next_drip:
            next_drip += DRIP
            for key in list(selector.get_map().values()):
                if key.data.drip:
                    with contextlib.suppress(OSError):
                        key.data.sock.send(key.data.drip)
    selector.close()


def test_slowloris_connections_are_closed_within_their_timeouts_while_requests_are_served(served: Served) -> None:
    delta = Delta(served.url)
    groups = {  # first bytes, drip, (closed no sooner, no later than) seconds after opening, answer
        "silent": (b"", b"", (1, 2), b""),
        "unfinished headers": (CHAT + b"X-Slow: ", b"a", (1, 2), b"HTTP/1.1 408 "),
        "a body that stops": (BODY_OWED + b"{", b"", (1, 2), b"HTTP/1.1 408 "),
        "a body that drips": (BODY_OWED + b"{", b" ", (3, 4), b"HTTP/1.1 408 "),
        "a body still dripping after a 404": (BODY_OWED.replace(b"/v1/chat/completions", b"/nowhere"), b" ", (3, 4),
                                              b"HTTP/1.1 404 "),
    }
    lorises: dict[str, list[Loris]] = {name: [] for name in groups}
    for _ in range(60):
        for name, (first, drip, _, _) in groups.items():
            lorises[name].append(Loris(opened(served.url, first), drip, time.monotonic()))
    timings: list[tuple[int, float]] = []
    done = threading.Event()

    def normal_requests() -> None:
        # a new connection for each request, as a client arriving meanwhile would open
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5) as http:
            while not done.wait(0.4):
                started = time.perf_counter()
                response = http.post(f"{served.url}/v1/chat/completions",
                                     json={"model": "glm-toapis", "messages": [{"role": "user", "content": "hi"}]})
                timings.append((response.status_code, time.perf_counter() - started))

    requests = threading.Thread(target=normal_requests)
    requests.start()
    try:
        besiege([loris for group in lorises.values() for loris in group], seconds=6)
    finally:
        done.set()
        requests.join(10)
    for name, (_, _, (sooner, later), starts) in groups.items():
        closed = [loris.closed_after for loris in lorises[name]]
        assert all(c is not None and sooner <= c <= later for c in closed), (name, closed)
        assert all(loris.received.startswith(starts) for loris in lorises[name]), (name, lorises[name][0].received)
    assert len(timings) >= 5 and all(status == 200 and seconds < 0.1 for status, seconds in timings), timings
    assert delta(REFUSED, reason="idle_timeout") == 60 and delta(REFUSED, reason="header_timeout") == 60
    assert delta(REFUSED, reason="body_timeout") == 180
    # the handler's own record of the requests the server answered 408 while they waited on their body
    assert delta("gateway_requests_total", model="unknown", provider="none", status="408",
                 code="request_timeout") == 120
    assert delta("gateway_requests_total", model="unknown", provider="none", status="499", code="client_closed") == 0


def memory(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_ten_unfinished_100_mib_headers_are_refused_fast_and_cost_little_memory(served: Served) -> None:
    pid = served.process.pid
    with contextlib.suppress(OSError):  # reset the peak (VmHWM) to the current RSS
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = memory(pid, "VmRSS")
    answers: list[tuple[bytes, float]] = []

    def attack() -> None:
        sock = opened(served.url, CHAT + b"X-Big: ")
        started, sent, chunk = time.monotonic(), 0, b"a" * 65536
        with contextlib.suppress(OSError):  # the gateway closes on us
            while sent < 100 << 20 and time.monotonic() - started < 20:
                sock.sendall(chunk)
                sent += len(chunk)
        answers.append((answer(sock), time.monotonic() - started))
        sock.close()

    attackers = [threading.Thread(target=attack) for _ in range(10)]
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join(30)
    assert len(answers) == 10
    assert all(a.startswith(b"HTTP/1.1 431 ") and b'"code":"headers_too_large"' in a for a, _ in answers), answers
    assert all(seconds < 2 for _, seconds in answers), [s for _, s in answers]
    assert memory(pid, "VmHWM") - before < 50 << 20
    assert httpx.get(f"{served.url}/healthz").status_code == 200


@pytest.mark.parametrize("headers, status", [
    ({f"x-h{i}": "v" for i in range(90)}, 200),  # httpx adds five of its own
    ({"x-big": "a" * 30_000}, 200),
    ({f"x-h{i}": "v" for i in range(101)}, 431),
    ({"x-big": "a" * 33 * 1024}, 431),
    ({f"x-h{i}": "a" * 400 for i in range(90)}, 431),  # 36 KB in all, no header over the limit alone
])
def test_header_count_and_size_limits(served: Served, headers: dict[str, str], status: int) -> None:
    response = httpx.get(f"{served.url}/healthz", headers=headers)
    assert response.status_code == status
    if status == 431:
        assert response.json()["error"]["code"] == "headers_too_large"
        assert response.headers["connection"] == "close"


@pytest.mark.parametrize("encoding, ours", [
    (b"identity, chunked", True), (b"gzip, chunked", True), (b"identity", True),
    # httptools refuses these itself: uvicorn's plain 400
    (b"chunked, chunked", False), (b"chunked\r\nTransfer-Encoding: chunked", False),
])
def test_a_transfer_encoding_other_than_chunked_is_refused(served: Served, encoding: bytes, ours: bool) -> None:
    delta = Delta(served.url)
    sock = opened(served.url, CHAT + b"Transfer-Encoding: " + encoding + b"\r\n\r\n" + chunked(STREAM))
    received = answer(sock)
    assert received.startswith(b"HTTP/1.1 400 ") and b"connection: close" in received and b"data: " not in received
    assert (b'"code":"invalid_request"' in received) == ours, received
    assert delta(REFUSED, reason="bad_transfer_encoding") == (1 if ours else 0)


def test_exactly_chunked_is_served(served: Served) -> None:
    sock = opened(served.url, CHAT + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked(STREAM))
    received = answer(sock)
    assert received.startswith(b"HTTP/1.1 200 ") and received.rstrip().endswith(b"0")


def test_a_client_that_stops_reading_is_cut_off_and_its_upstream_released(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    sim.control(provider="toapis", words=300_000)  # ~45 MB of events: more than every buffer between us holds
    with start_gateway(path, client_write_timeout=1) as url:
        gateway, upstream = SERVERS[url].server_state, SERVERS[sim.url].server_state
        delta = Delta(url)
        started = time.monotonic()
        sock = opened(url, CHAT + b"Content-Length: %d\r\n\r\n" % len(STREAM) + STREAM, receive_buffer=4096)
        wait_until(lambda: gateway.tasks, what="the request to start", timeout=5)
        wait_until(lambda: not gateway.tasks and not gateway.connections, what="the gateway to cut the client off",
                   timeout=15)
        assert time.monotonic() - started > 1  # not before the write timeout
        wait_until(lambda: not upstream.tasks, what="the upstream request to end", timeout=5)
        assert delta(REFUSED, reason="write_timeout") == 1
        assert delta("gateway_requests_total", model="glm-toapis", provider="toapis", status="499",
                     code="client_closed") == 1
        sock.close()


def refusals(served: Served) -> list[dict]:
    return served.logged("client_refused")


def test_every_refusal_is_logged_once_with_the_client_and_counted(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    sim.control(provider="toapis", words=300_000)
    with gateway_process(path, **LOW, GATEWAY_MAX_CONNECTIONS="8") as served:
        samples = scrape(served.url)
        assert all((REFUSED, frozenset({("reason", r)})) in samples for r in REASONS)  # at 0 from the start
        clients: dict[str, str] = {}

        def sent(reason: str, data: bytes = b"", **options: int) -> socket.socket:
            sock = opened(served.url, data, **options)
            host, port = sock.getsockname()
            clients[reason] = f"{host}:{port}"
            return sock

        slow = [sent("idle_timeout"), sent("header_timeout", CHAT), sent("body_timeout", BODY_OWED + b"{"),
                sent("header_too_large", CHAT + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n"),
                sent("too_many_headers", CHAT + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n"),
                sent("bad_transfer_encoding", CHAT + b"Transfer-Encoding: identity, chunked\r\n\r\n" + chunked(STREAM)),
                sent("write_timeout", CHAT + b"Content-Length: %d\r\n\r\n" % len(STREAM) + STREAM,
                     receive_buffer=4096)]
        for sock in slow[:-1]:
            answer(sock)
        wait_until(lambda: len(refusals(served)) == len(slow), what="the first refusals", timeout=10,
                   log=served.lines)
        slow[-1].close()
        # at the cap (8), a ninth connection closes the one idle for longest: the first of these
        crowd = [sent("connection_cap")] + [opened(served.url) for _ in range(8)]
        assert answer(crowd[0], timeout=2) == b""
        for sock in crowd[1:]:
            sock.close()
        wait_until(lambda: len(refusals(served)) == len(REASONS), what="every refusal", timeout=5, log=served.lines)
        logged = refusals(served)
        assert sorted(r["reason"] for r in logged) == sorted(REASONS), logged
        assert all(r["client"] == clients[r["reason"]] and r["unlogged"] == 0 for r in logged), (logged, clients)
        samples = scrape(served.url)
        assert all(value(samples, REFUSED, reason=r) == 1 for r in REASONS), [value(samples, REFUSED, reason=r)
                                                                               for r in REASONS]
        # a flood of one reason: every one counted, five lines a second logged, the rest said in the next line
        for _ in range(20):
            answer(opened(served.url, CHAT + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n"))
        time.sleep(1.1)
        answer(opened(served.url, CHAT + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n"))
        wait_until(lambda: refusals(served)[-1]["unlogged"] > 0, what="the line after the flood", timeout=5)
        flood = [r for r in refusals(served) if r["reason"] == "header_too_large"][1:]
        assert len(flood) == 6 and flood[-1]["unlogged"] == 15, flood
        assert value(scrape(served.url), REFUSED, reason="header_too_large") == 22


def test_refusals_are_counted_over_every_worker(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with gateway_process(path, "--workers", "2") as served:
        for _ in range(12):
            answer(opened(served.url, CHAT + b"Transfer-Encoding: identity, chunked\r\n\r\n" + chunked(STREAM)))
        samples = scrape(served.url)
        assert value(samples, REFUSED, reason="bad_transfer_encoding") == 12
        assert all((REFUSED, frozenset({("reason", r)})) in samples for r in REASONS)
