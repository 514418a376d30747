"""Operating the real process: `gateway serve` with --workers 2, config reload by SIGHUP and by
/admin/reload, JSON logs on stdout, /metrics on its own port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import UPSTREAM_KEYS, Simulator, config_text, start_gateway
from tests.servers import free_port, stop
from tests.test_metrics import scrape, value

ROOT = Path(__file__).resolve().parents[1]
USER = {"role": "user", "content": "Hello there"}


class Served:
    def __init__(self, process: subprocess.Popen[str], url: str, lines: list[str]) -> None:
        self.process, self.url, self.lines = process, url, lines

    def logged(self, event: str) -> list[dict]:
        out = []
        for line in list(self.lines):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                out.append(record)
        return out


@contextmanager
def gateway_process(config: Path, *args: str, preexec_fn: Callable[[], None] | None = None,
                    **env: str) -> Iterator[Served]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                str(port), *args], cwd=ROOT, env={**environment, **env}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, what=f"{url}/readyz", log=lines)
        yield Served(process, url, lines)
    finally:
        stop(process)


def worker_pids(served: Served) -> set[int]:
    """The supervisor's serving workers (not multiprocessing's resource tracker); none without one."""
    found = subprocess.run(["pgrep", "-P", str(served.process.pid), "-f", "spawn_main"], capture_output=True,
                           text=True).stdout.split()
    return {int(pid) for pid in found}


def wait_until(check, what: str, timeout: float = 20, log: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}; output:\n" + "".join(log or []))


@pytest.fixture
def config(sim: Simulator, tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    return path


def chat(url: str, model: str = "glm-toapis", **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": [USER], **extra}, timeout=20)


def test_two_workers_serve_and_metrics_sum_over_both(config: Path) -> None:
    with gateway_process(config, "--workers", "2") as served:
        for _ in range(30):
            assert chat(served.url).status_code == 200
        samples = scrape(served.url)
        assert value(samples, "gateway_requests_total", model="glm-toapis", provider="toapis", status="200",
                     code="ok") == 30
        assert value(samples, "gateway_request_duration_seconds_count", model="glm-toapis", provider="toapis",
                     stream="false") == 30
        assert value(samples, "gateway_tokens_total", model="glm-toapis", provider="toapis", kind="completion") == 90
        wait_until(lambda: len(served.logged("request")) == 30, what="30 request lines", log=served.lines)
        prefixes = {line["request_id"][:12] for line in served.logged("request")}  # one id prefix per process
        assert len(prefixes) == 2, "both workers log their requests"
        children = subprocess.run(["pgrep", "-P", str(served.process.pid), "-f", "spawn_main"], capture_output=True,
                                  text=True).stdout.split()  # the workers, not multiprocessing's resource tracker
        rss = {(dict(labels)["pid"], dict(labels)["role"]): v for (name, labels), v in samples.items()
               if name == "process_resident_memory_bytes"}
        assert set(rss) == {(str(served.process.pid), "supervisor"), *((pid, "worker") for pid in children)}, rss
        assert len(children) == 2 and all(v > 10e6 for v in rss.values()), rss
        fds = [v for (name, labels), v in samples.items() if name == "process_open_fds"]
        assert len(fds) == 3 and all(v > 0 for v in fds)


def test_a_killed_worker_leaves_the_inflight_sum(config: Path, sim: Simulator) -> None:
    sim.control(chunk_delay_ms=100, words=100)
    with gateway_process(config, "--workers", "2") as served:
        def inflight() -> float:
            return value(scrape(served.url), "gateway_inflight_requests")

        with httpx.stream("POST", f"{served.url}/v1/chat/completions", timeout=20,
                          json={"model": "glm-toapis", "messages": [USER], "stream": True}) as response:
            # keep the iterator: a dropped one is finalised at once and closes the connection
            chunks = response.iter_raw()
            next(chunks)
            assert inflight() == 1
            workers = subprocess.run(["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True)
            for pid in workers.stdout.split():
                os.kill(int(pid), signal.SIGKILL)
        wait_until(lambda: httpx.get(f"{served.url}/readyz", timeout=1).status_code == 200 and inflight() == 0,
                   what="restarted workers and an in-flight sum of 0", log=served.lines)


def test_one_json_line_per_request_and_attempt_without_keys_or_bodies(config: Path) -> None:
    with gateway_process(config, GATEWAY_API_KEYS="sk-client-log") as served:
        response = httpx.post(f"{served.url}/v1/chat/completions", headers={"Authorization": "Bearer sk-client-log",
                              "x-request-id": "log-test-1"}, json={"model": "glm-siliconflow", "messages": [USER]})
        assert response.status_code == 200
        wait_until(lambda: served.logged("request"), what="the access log line")
        line = served.logged("request")[-1]
        assert line["request_id"] == "log-test-1" and line["model"] == "glm-siliconflow"
        assert line["provider"] == "siliconflow" and line["upstream_model"] == "Pro/zai-org/GLM-4.7"
        # 3 words of answer, 4 of the reasoning siliconflow gives unasked (siliconflow.txt:11-39)
        assert line["status"] == 200 and line["attempts"] == 1 and line["completion_tokens"] == 7
        assert line["latency_ms"] > 0 and line["ttfb_ms"] > 0
        attempt = served.logged("attempt")[-1]
        assert attempt.pop("headers_ms") > 0
        assert attempt == {"event": "attempt", "request_id": "log-test-1", "attempt": 1, "provider": "siliconflow",
                           "outcome": "ok", "retry": False}
        output = "".join(served.lines)
        for secret in ("sk-client-log", *UPSTREAM_KEYS.values()):
            assert secret not in output
        assert "Hello there" not in output and "Traceback" not in output


def test_bodies_are_logged_only_when_asked(config: Path) -> None:
    with gateway_process(config, GATEWAY_LOG_BODIES="true") as served:
        chat(served.url)
        wait_until(lambda: served.logged("request"), what="the access log line")
        assert "Hello there" in served.logged("request")[-1]["body"]


def test_metrics_on_their_own_port(config: Path) -> None:
    metrics_port = free_port()
    with gateway_process(config, GATEWAY_METRICS_PORT=str(metrics_port)) as served:
        chat(served.url)
        assert httpx.get(f"{served.url}/metrics").status_code == 404
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert ('gateway_requests_total{code="ok",frontdoor="chat",model="glm-toapis",provider="toapis",'
                'status="200"} 1.0') in text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_and_an_invalid_file_keeps_the_old_table(config: Path, workers: str) -> None:
    with gateway_process(config, "--workers", workers) as served:
        before = worker_pids(served)
        config.write_text(config.read_text() + "  glm-new:\n    - {provider: toapis, model: glm-5}\n")
        served.process.send_signal(signal.SIGHUP)
        # every worker replaced (one by one; ten answers in a row from the new table may all come
        # from the first new worker while the second old one still runs): then the new alias
        wait_until(lambda: len(now := worker_pids(served)) == len(before) and not now & before
                   and all(chat(served.url, "glm-new").status_code == 200 for _ in range(10)),
                   what="the new alias on every worker", log=served.lines)
        good = config.read_text()
        for broken, problem in (("providers: [broken\n", "(yaml)"),
                                (good.replace("toapis:\n    base_url", "toapis:\n    profile: [x]\n    base_url", 1),
                                 "providers.toapis.profile")):
            config.write_text(broken)
            seen = len(served.logged("reload_rejected"))
            served.process.send_signal(signal.SIGHUP)
            wait_until(lambda seen=seen: len(served.logged("reload_rejected")) > seen, what="the rejected reload",
                       log=served.lines)
            assert problem in served.logged("reload_rejected")[-1]["error"]
            assert chat(served.url, "glm-new").status_code == 200
        assert "Traceback" not in "".join(served.lines)


def test_admin_reload_needs_the_admin_key_and_in_flight_requests_finish(config: Path, sim: Simulator) -> None:
    with start_gateway(config, admin_key="sk-admin") as url:
        assert httpx.post(f"{url}/admin/reload").status_code == 401
        assert httpx.post(f"{url}/admin/reload", headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
        sim.control(chunk_delay_ms=50, words=20)
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=20,
                          json={"model": "glm-maxtoken", "messages": [USER], "stream": True}) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            config.write_text(config_text(sim.url).replace("glm-maxtoken", "glm-renamed"))
            reloaded = httpx.post(f"{url}/admin/reload", headers={"Authorization": "Bearer sk-admin"})
            assert reloaded.status_code == 200 and "glm-renamed" in reloaded.json()["models"]
            rest = first + b"".join(chunks)
        assert rest.count(b'"content":"') >= 20 and rest.endswith(b"data: [DONE]\n\n")  # finished on the old table
        assert chat(url, "glm-maxtoken").status_code == 404 and chat(url, "glm-renamed").status_code == 200
        for broken in ("models: {}\n", "providers:\n  x:\n    profile: [x]\n", "providers:\n  x: {api_key: sk-1: 2}\n"):
            config.write_text(broken)
            refused = httpx.post(f"{url}/admin/reload", headers={"Authorization": "Bearer sk-admin"})
            assert refused.status_code == 400 and "old table keeps serving" in refused.json()["error"]["message"]
            assert "sk-1" not in refused.text
            assert chat(url, "glm-renamed").status_code == 200


def test_requests_past_the_shutdown_grace_are_told_and_logged_in_one_line_each(config: Path,
                                                                              sim: Simulator) -> None:
    sim.control(provider="toapis", chunk_delay_ms=200, words=50)
    sim.control(provider="token360", ttfb_ms=10_000)
    with gateway_process(config, GATEWAY_SHUTDOWN_GRACE="1") as served, httpx.Client(timeout=20) as http:
        with ThreadPoolExecutor(1) as pool, \
                http.stream("POST", f"{served.url}/v1/chat/completions",
                            json={"model": "glm-toapis", "messages": [USER], "stream": True}) as response:
            chunks = response.iter_raw()
            received = next(chunks)
            waiting = pool.submit(chat, served.url, "glm-token360")
            wait_until(lambda: sim.requests("token360"), what="the JSON request upstream")
            served.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(httpx.RemoteProtocolError):
                for chunk in chunks:
                    received += chunk
            cut = waiting.result()
        served.process.wait(timeout=15)
    assert received.rstrip().endswith(b'"code":"shutdown"}}'), received[-300:]
    assert cut.status_code == 503 and cut.json()["error"]["code"] == "shutdown", "".join(served.lines)
    logged = [(r["model"], r["status"], r["error"]) for r in served.logged("request")]
    assert sorted(logged) == [("glm-toapis", 200, "shutdown"), ("glm-token360", 503, "shutdown")]
    output = "".join(served.lines)
    assert "Traceback" not in output and "Exception in ASGI" not in output, output


def test_admin_endpoints_are_off_without_an_admin_key(config: Path) -> None:
    with start_gateway(config) as url:
        assert httpx.post(f"{url}/admin/reload").status_code == 401


def test_client_strings_in_errors_and_log_lines_are_bounded(config: Path) -> None:
    huge = "m" * (9 * 1024 * 1024)
    with gateway_process(config) as served, httpx.Client(base_url=served.url, timeout=20) as http:
        unknown = http.post("/v1/chat/completions", json={"model": huge, "messages": [USER]})
        odd_role = http.post("/v1/chat/completions",
                             json={"model": "glm-maxtoken", "messages": [{"role": "r" * 100_000, "content": "hi"}]})
        wait_until(lambda: len(served.logged("request")) == 2, what="two request lines", log=served.lines)
    assert unknown.status_code == 404 and len(unknown.content) < 1000, unknown.content[:300]
    assert f"({len(huge)} characters)" in unknown.json()["error"]["message"]
    assert odd_role.status_code == 400 and len(odd_role.content) < 1000, odd_role.content[:300]
    assert max(len(line) for line in served.lines) < 1000
    assert served.logged("request")[0]["model"].endswith(f"… ({len(huge)} characters)")
