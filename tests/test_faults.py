"""The fault-injection suite (issue 10): every fault the simulators can inject, streaming and not,
against an alias whose primary misbehaves and whose backup is healthy.

Each cell checks what the client got (a whole answer exactly once where the failure came before
the first byte; else the bytes so far, never repeated, then an error event), what each upstream
received (no try after bytes reached the client), that the request ended within its deadline,
and that the gateway is left with nothing in flight and no request still being handled.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, UPSTREAM_KEYS, Simulator, config_text, start_gateway
from tests.servers import SERVERS, free_port
from tests.test_metrics import scrape, value
from tests.test_operate import gateway_process, wait_until

WORDS = 12
ANSWER = " ".join(f"w{i}" for i in range(WORDS))
DEADLINE = 8.0  # GATEWAY_REQUEST_DEADLINE of the gateways under test
USER = {"role": "user", "content": "Hello"}
TIGHT = "    timeout: {connect: 1, first_byte: 1, idle: 1, total: 4}\n    retry: {attempts: 2, backoff_base: 0.01}\n"


def providers(sim: Simulator) -> str:
    """primary (toapis' page) fails as told; backup (maxtoken's page) answers; refused listens nowhere."""
    return (f"  primary:\n    profile: toapis\n    base_url: {sim.url}/toapis/v1\n"
            f"    api_key: {UPSTREAM_KEYS['toapis']}\n{TIGHT}"
            f"  backup:\n    profile: maxtoken\n    base_url: {sim.url}/maxtoken/v1\n"
            f"    api_key: {UPSTREAM_KEYS['maxtoken']}\n{TIGHT}"
            f"  refused:\n    profile: toapis\n    base_url: http://127.0.0.1:{free_port()}/v1\n"
            f"    api_key: k\n{TIGHT}")


MODELS = ("  glm-pair:\n    - {provider: primary, model: glm-5}\n    - {provider: backup, model: glm-5-turbo}\n"
          "  glm-solo:\n    - {provider: primary, model: glm-5}\n"
          "  glm-refused:\n    - {provider: refused, model: glm-5}\n    - {provider: backup, model: glm-5-turbo}\n")


@contextlib.contextmanager
def gateway_for(sim: Simulator, tmp: Path, **settings: Any) -> Iterator[str]:
    path = tmp / "gateway.yaml"
    path.write_text(config_text(sim.url, providers(sim), MODELS))
    with start_gateway(path, api_keys=CLIENT_KEY, request_deadline=DEADLINE, **settings) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # ejection off: each cell must see the same routing, whatever the cells before it did
    with gateway_for(sim, tmp_path_factory.mktemp("faults"), eject_after=1_000_000, eject_rate=2) as url:
        yield url


@dataclass
class Seen:
    status: int
    content: str  # the answer's text, as the client assembled it
    events: list[Any]  # parsed data events (streams), "[DONE]" as a string
    seconds: float

    @property
    def error(self) -> Any:
        return self.events[-1].get("error") if self.events and isinstance(self.events[-1], dict) else None


def ask(url: str, model: str, stream: bool, slow_reader: float = 0.0) -> Seen:
    started = time.monotonic()
    body = {"model": model, "messages": [USER], "stream": stream}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30) as http, \
            http.stream("POST", "/v1/chat/completions", json=body) as response:
        if slow_reader:
            time.sleep(slow_reader)  # the gateway is left blocked writing to us
        raw = response.read()
    seconds = time.monotonic() - started
    if not stream or not response.headers.get("content-type", "").startswith("text/event-stream"):
        answer = orjson.loads(raw)
        content = answer["choices"][0]["message"]["content"] if response.status_code == 200 else ""
        return Seen(response.status_code, content, [answer], seconds)
    events: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                      if isinstance(e, dict) and e.get("choices"))
    return Seen(response.status_code, content, events, seconds)


def settled(url: str) -> None:
    """Nothing in flight and no request task left on the gateway (an upstream read included)."""
    server = SERVERS[url]
    deadline = time.monotonic() + 2
    while server.server_state.tasks or value(scrape(url), "gateway_inflight_requests") != 0:
        assert time.monotonic() < deadline, f"left running: {server.server_state.tasks}"
        time.sleep(0.02)


@dataclass(frozen=True)
class Fault:
    knobs: dict[str, Any]
    tries: int  # requests the primary gets
    recovered: bool = True  # the client gets the whole answer (else its stream ends with an error event)
    by: str = "backup"  # who answers when recovered
    json_knobs: dict[str, Any] | None = None  # the same fault for a JSON answer, where it differs
    streams: tuple[bool, ...] = (False, True)


MID = {"chunk_delay_ms": 30}  # the first events reach the client before the fault
FAULTS = {
    "503": Fault({"status": 503}, tries=2),
    "500": Fault({"status": 500}, tries=2),
    "529": Fault({"status": 529}, tries=2),
    "429, Retry-After 1 (within the backoff: retried)": Fault({"status": 429, "retry_after": 1, "count": 1},
                                                              tries=2, by="primary"),
    "429, Retry-After 5 (past it: the next route)": Fault({"status": 429, "retry_after": 5}, tries=1),
    "429, no Retry-After (backoff: retried)": Fault({"status": 429, "retry_after": 0, "count": 1}, tries=2,
                                                    by="primary"),
    "reset before the first byte": Fault({"reset_after": 0}, tries=2, streams=(True,)),
    "stall before the first byte": Fault({"stall_after": 0}, tries=2, json_knobs={"ttfb_ms": 3000}),
    "malformed first event": Fault({"malformed_after": 0}, tries=2, streams=(True,)),
    "error in a 200": Fault({"error_after": 0}, tries=2),
    "reset mid-stream": Fault({"reset_after": 3, **MID}, tries=1, recovered=False, streams=(True,)),
    "stall mid-stream": Fault({"stall_after": 3, **MID}, tries=1, recovered=False, streams=(True,)),
    "malformed mid-stream": Fault({"malformed_after": 3, **MID}, tries=1, recovered=False, streams=(True,)),
    "error event mid-stream": Fault({"error_after": 3, **MID}, tries=1, recovered=False, streams=(True,)),
    # a byte every few ms: the first event inside first_byte (1 s), never an idle second, the 4 s total stops it
    "drip past the total": Fault({"drip_ms": 2}, tries=1, recovered=False, streams=(True,)),
    "drip past the total, JSON": Fault({"drip_ms": 40}, tries=1, streams=(False,)),
}
CELLS = [(name, stream) for name, fault in FAULTS.items() for stream in fault.streams]


@pytest.mark.parametrize("name, stream", CELLS, ids=[f"{n}-{'stream' if s else 'json'}" for n, s in CELLS])
def test_fault(gateway: str, sim: Simulator, name: str, stream: bool) -> None:
    fault = FAULTS[name]
    knobs = dict(fault.knobs if stream or fault.json_knobs is None else fault.json_knobs)
    sim.control(words=WORDS)
    sim.control(provider="toapis", **knobs)
    seen = ask(gateway, "glm-pair", stream)
    assert seen.seconds < DEADLINE + 1
    assert len(sim.requests("toapis")) == fault.tries, "tries on the primary"
    if fault.recovered:
        assert seen.status == 200 and seen.content == ANSWER and seen.error is None, seen
        assert len(sim.requests("maxtoken")) == (1 if fault.by == "backup" else 0)
        if stream:
            assert seen.events[-1] == "[DONE]"
    else:  # bytes reached the client: no other try, the stream ends with an error event
        assert seen.status == 200 and seen.error is not None and "[DONE]" not in seen.events, seen
        assert ANSWER.startswith(seen.content) and len(seen.content) < len(ANSWER)
        assert sim.requests("maxtoken") == []
    settled(gateway)


@pytest.mark.parametrize("stream", [False, True])
def test_connect_refused_falls_back(gateway: str, sim: Simulator, stream: bool) -> None:
    sim.control(provider="maxtoken", words=WORDS)
    seen = ask(gateway, "glm-refused", stream)
    assert seen.status == 200 and seen.content == ANSWER and len(sim.requests("maxtoken")) == 1
    settled(gateway)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("knobs, status", [({"status": 503}, 502), ({"stall_after": 0, "ttfb_ms": 3000}, 504),
                                           ({"status": 429, "retry_after": 5}, 429)])
def test_with_no_route_left_the_client_gets_an_http_error(gateway: str, sim: Simulator, stream: bool,
                                                          knobs: dict[str, Any], status: int) -> None:
    """Nothing was sent before the first data event: even a stream gets a plain HTTP status."""
    sim.control(provider="toapis", **knobs)
    seen = ask(gateway, "glm-solo", stream)
    assert seen.status == status and seen.events[0]["error"]["message"].startswith("primary"), seen
    assert seen.seconds < DEADLINE + 1
    settled(gateway)


def test_a_slow_client_is_not_an_idle_upstream(gateway: str, sim: Simulator) -> None:
    """Time blocked writing to a client that does not read is not the upstream's idleness."""
    words = 80_000  # ~12 MB of events: more than the socket buffers on both sides hold
    sim.control(provider="toapis", words=words)
    seen = ask(gateway, "glm-pair", True, slow_reader=2.5)  # 2.5 s unread: past the 1 s idle timeout
    assert seen.status == 200 and seen.error is None and seen.events[-1] == "[DONE]"
    assert seen.content == " ".join(f"w{i}" for i in range(words))
    assert len(sim.requests("toapis")) == 1
    settled(gateway)


def test_a_client_that_leaves_cancels_the_whole_request(gateway: str, sim: Simulator) -> None:
    sim.control(provider="toapis", words=200, chunk_delay_ms=50)
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "glm-pair", "messages": [USER], "stream": True}, timeout=10) as response:
        next(response.iter_raw())
    settled(gateway)  # within 2 s: the upstream connection closed with it
    assert len(sim.requests("toapis")) == 1 and sim.requests("maxtoken") == [], "no other attempt or route"


def test_quota_fails_over_at_once_and_is_not_retried(sim: Simulator, tmp_path: Path) -> None:
    """maxtoken's 403 (maxtoken.txt:162) and Zhipu's 1113 (sent with a 429) say: no balance."""
    extra = (f"  broke:\n    profile: maxtoken\n    base_url: {sim.url}/maxtoken/v1\n"
             f"    api_key: {UPSTREAM_KEYS['maxtoken']}\n"
             f"  arrears:\n    profile: powertokens\n    base_url: {sim.url}/powertokens/v1\n"
             f"    api_key: {UPSTREAM_KEYS['powertokens']}\n")
    models = ("  glm-broke:\n    - {provider: broke, model: glm-5-turbo}\n    - {provider: toapis, model: glm-5}\n"
              "  glm-arrears:\n    - {provider: arrears, model: glm-4.7-flash}\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url, extra, models))
    with start_gateway(path, api_keys=CLIENT_KEY) as url:
        sim.control(provider="maxtoken", status=403)
        seen = ask(url, "glm-broke", False)
        assert seen.status == 200 and len(sim.requests("maxtoken")) == 1 and len(sim.requests("toapis")) == 1
        sim.control(provider="powertokens", status=429, retry_after=1, error_code="1113")
        seen = ask(url, "glm-arrears", False)
        error = seen.events[0]["error"]
        assert seen.status == 502 and error["code"] == "quota_exhausted" and error["message"].startswith("arrears")
        assert len(sim.requests("powertokens")) == 1  # a 429 would have been retried after its 1 s


def test_a_primary_that_dies_mid_run_costs_a_handful_and_no_client_errors(sim: Simulator, tmp_path: Path) -> None:
    with gateway_for(sim, tmp_path) as url:  # default ejection: 5 failed attempts in a row
        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10) as http:
                while not stop.is_set():
                    response = http.post("/v1/chat/completions", json={"model": "glm-pair", "messages": [USER]})
                    statuses.append(response.status_code)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        before = len(sim.requests("toapis"))
        sim.control(provider="toapis", status=503)  # the primary dies
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(10)
        after = len(sim.requests("toapis")) - before
        assert before > 10 and after <= 10, (before, after)
        assert statuses and set(statuses) == {200}
        assert value(scrape(url), "gateway_provider_up", provider="primary") == 0
        settled(url)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_with_streams_in_flight(sim: Simulator, tmp_path: Path, workers: str) -> None:
    """/readyz says 503 at once; requests are served for GATEWAY_SHUTDOWN_DELAY; then the listener
    closes and the streams in flight finish whole; then the process exits."""
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(sim.url))
    sim.control(provider="toapis", words=30, chunk_delay_ms=100)  # 3 s a stream
    with gateway_process(config, "--workers", workers, GATEWAY_SHUTDOWN_DELAY="1.5") as served:
        results: list[Seen] = []
        threads = [threading.Thread(target=lambda: results.append(ask(served.url, "glm-toapis", True)))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{served.url}/readyz", timeout=1).status_code == 503, what="readyz 503",
                   timeout=1, log=served.lines)
        assert time.monotonic() - terminated < 1.0
        ok = httpx.post(f"{served.url}/v1/chat/completions", timeout=5,
                        json={"model": "glm-siliconflow", "messages": [USER]})
        assert ok.status_code == 200  # still served during the delay
        def closed() -> bool:
            try:
                httpx.get(f"{served.url}/healthz", timeout=0.5)
            except httpx.TransportError:
                return True
            return False
        # the delay over (the supervisor passes SIGTERM on within half a second): the listener closes
        wait_until(closed, what="the listener to close", timeout=2.5, log=served.lines)
        assert time.monotonic() - terminated >= 1.5
        for thread in threads:
            thread.join(10)
        assert [r.status for r in results] == [200] * 3
        assert all(r.events[-1] == "[DONE]" and r.content == " ".join(f"w{i}" for i in range(30)) for r in results)
        served.process.wait(10)
        assert served.logged("draining")


def test_the_retry_budget_bounds_retries_against_a_dead_upstream(gateway: str, sim: Simulator) -> None:
    """20 requests at once to a failing primary: at most max(3, 20% of 20) retries run at a time,
    so the upstream sees far fewer than the 40 tries the retry setting alone would allow."""
    sim.control(provider="toapis", status=503, ttfb_ms=300)  # the tries overlap
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(ask(gateway, "glm-solo", False).status))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses == [502] * 20
    assert 20 <= len(sim.requests("toapis")) <= 28, len(sim.requests("toapis"))
    settled(gateway)


def test_reasoning_deltas_are_progress(sim: Simulator, tmp_path: Path) -> None:
    """A stream that sends only reasoning for longer than first_byte is alive (a peer answered 502)."""
    extra = (f"  thinker:\n    profile: siliconflow\n    base_url: {sim.url}/siliconflow/v1\n"
             f"    api_key: {UPSTREAM_KEYS['siliconflow']}\n    timeout: {{first_byte: 1, idle: 1}}\n")
    path = tmp_path / "gateway.yaml"
    models = "  glm-thinker:\n    - {provider: thinker, model: Pro/zai-org/GLM-4.7}\n"
    path.write_text(config_text(sim.url, extra, models))
    sim.control(provider="siliconflow", chunk_delay_ms=400)  # its reasoning deltas come first, 0.4 s apart
    with start_gateway(path, api_keys=CLIENT_KEY) as url:
        seen = ask(url, "glm-thinker", True)
    reasoning = [e for e in seen.events if isinstance(e, dict) and e.get("choices")
                 and e["choices"][0]["delta"].get("reasoning_content")]
    assert seen.status == 200 and seen.error is None and seen.events[-1] == "[DONE]" and len(reasoning) >= 3
    assert seen.seconds > 1.5 and len(sim.requests("siliconflow")) == 1  # past first_byte before any content


def test_weights_balance_the_routes(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    models = ("  glm-weighted:\n    - {provider: primary, model: glm-5, weight: 3}\n"
              "    - {provider: backup, model: glm-5-turbo, weight: 1}\n")
    path.write_text(config_text(sim.url, providers(sim), models))
    with start_gateway(path, api_keys=CLIENT_KEY) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as http:
        for _ in range(200):
            assert http.post("/v1/chat/completions", json={"model": "glm-weighted", "messages": [USER]}).status_code \
                == 200
    primary, backup = len(sim.requests("toapis")), len(sim.requests("maxtoken"))
    assert primary + backup == 200 and 120 <= primary <= 180, (primary, backup)  # 150 expected, 3:1
