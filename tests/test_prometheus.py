"""A real Prometheus in front of `gateway serve` (1 and 2 workers): after a mixed load, every
README query and every dashboard panel returns data, and the numbers agree with what the clients
saw (statuses, attempts per provider, TTFB per provider) and with the access log (issue 9).

Prometheus is Debian's package; `make test` installs it when missing and it can (as root).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, Simulator, config_text
from tests.servers import free_port, stop
from tests.test_operate import Served, gateway_process, wait_until

ROOT = Path(__file__).resolve().parents[1]
USER = {"role": "user", "content": "Hello there"}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="!!! PROMETHEUS NOT INSTALLED: the end-to-end metrics test did not run (apt-get install prometheus) !!!")


def readme_queries() -> list[str]:
    """Every query in the README's ```promql blocks (one per `#` comment line that starts it)."""
    text = (ROOT / "README.md").read_text()
    queries = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        for query in re.split(r"\n(?=#)", block.strip()):
            body = "\n".join(line for line in query.splitlines() if not line.startswith("#")).strip()
            if body:
                queries.append(body)
    return queries


def dashboard_queries(provider: str = ".*") -> list[tuple[str, str]]:
    """(panel title, expression) for every target of the shipped dashboard, variables as Grafana
    would fill them (all models; ``provider`` as selected)."""
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
                    .replace("$provider", provider))
            out.append((panel["title"], expr))
    return out


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def by(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {tuple(r["metric"].get(name, "") for name in labels): float(r["value"][1])
                for r in self.query(promql)}


@contextmanager
def prometheus(target: str, tmp: Path) -> Iterator[Prometheus]:
    port = free_port()
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: gateway\n    static_configs: [{{targets: ['{target}']}}]\n")
    process = subprocess.Popen([str(PROMETHEUS), f"--config.file={tmp / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: httpx.get(f"{server.url}/-/ready").status_code == 200, what="prometheus to start")
        wait_until(lambda: server.by("up", "job") == {("gateway",): 1.0}, what="prometheus scraping the gateway")
        yield server
    finally:
        stop(process)


class Load:
    """A mixed load through the OpenAI SDK; tallies what the clients saw as (model label, status)."""

    def __init__(self, url: str, sim: Simulator) -> None:
        self.url, self.sim = url, sim
        self.seen: Counter[tuple[str, str]] = Counter()
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)

    def call(self, model: str, label: str | None = None, client: openai.OpenAI | None = None, **kwargs: Any) -> None:
        try:
            answer = (client or self.client).chat.completions.create(model=model, **{"messages": [USER], **kwargs})
            if kwargs.get("stream"):
                list(answer)
            status = 200
        except openai.APIStatusError as exc:
            status = exc.status_code
        self.seen[(label or model, str(status))] += 1

    def leave_mid_stream(self, model: str) -> None:
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": model, "messages": [USER], "stream": True}, timeout=20) as response:
            next(response.iter_raw())
        self.seen[(model, "499")] += 1

    def run(self) -> None:
        for _ in range(10):
            self.call("glm-toapis")
        for _ in range(6):
            self.call("glm-siliconflow", stream=True, extra_body={"enable_thinking": True})
        for _ in range(4):
            self.call("glm-token360", tools=[TOOL], stream=True)
        for _ in range(3):  # a documented limit: rejected before any provider
            self.call("glm-powertokens", temperature=3)
        self.sim.control(provider="maxtoken", status=503, ttfb_ms=250, count=3)
        for _ in range(3):  # maxtoken fails slowly three times (not enough to eject it), token360 answers; then it does
            self.call("glm-fallback")
        self.sim.control(provider="toapis", status=429, retry_after=5, count=2)  # longer than any backoff
        for _ in range(2):
            self.call("glm-toapis")
        for _ in range(2):
            self.call("glm-maxtoken", messages=[{"role": "user", "content": "[unsafe] x"}])
        with openai.OpenAI(base_url=f"{self.url}/v1", api_key="sk-wrong", max_retries=0) as wrong:
            for _ in range(3):
                self.call("glm-toapis", "unknown", client=wrong)
        for _ in range(2):
            self.call("no-such-model", "unknown")
        for _ in range(2):
            self.call("glm-toapis", messages="not a list")
        self.sim.control(provider="toapis", chunk_delay_ms=100, words=50, count=2)
        for _ in range(2):
            self.leave_mid_stream("glm-toapis")


ALIASES = {"glm-toapis", "glm-siliconflow", "glm-token360", "glm-powertokens", "glm-fallback", "glm-maxtoken"}


def logged_statuses(served: Served) -> Counter[tuple[str, str]]:
    """(model label, status) of the access log's request lines."""
    return Counter((line["model"] if line["model"] in ALIASES else "unknown", str(line["status"]))
                   for line in served.logged("request"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_prometheus_sees_what_the_clients_saw(sim: Simulator, tmp_path: Path, workers: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(sim.url))
    with gateway_process(config, "--workers", workers, GATEWAY_API_KEYS=CLIENT_KEY) as served, \
            prometheus(served.url.removeprefix("http://"), tmp_path) as prom:
        time.sleep(1.5)  # a scrape of the all-zero series before the first request
        load = Load(served.url, sim)
        load.run()
        attempts = Counter(r["provider"] for r in sim.requests())  # what reached each upstream
        total = sum(load.seen.values())
        wait_until(lambda: prom.by("sum(gateway_requests_total)") == {(): float(total)},
                   what=f"prometheus to see {total} requests", log=served.lines)
        time.sleep(1.5)  # one more scrape, so that rate() has the last values on both sides

        statuses = prom.by("sum by (model, status) (gateway_requests_total) > 0", "model", "status")
        assert statuses == {key: float(n) for key, n in load.seen.items()}
        wait_until(lambda: logged_statuses(served) == load.seen, what="the access log to agree", log=served.lines)
        assert prom.by("sum by (provider) (gateway_upstream_attempts_total) > 0", "provider") == \
            {(p,): float(n) for p, n in attempts.items()}
        assert prom.by('gateway_upstream_attempts_total{outcome!="ok"} > 0', "provider", "outcome") == {
            ("maxtoken", "upstream_error"): 3.0, ("toapis", "rate_limited"): 2.0,
            ("maxtoken", "content_filter"): 2.0, ("toapis", "client_closed"): 2.0}
        # TTFB per provider: the 250 ms of maxtoken's failures are its own, token360's answers fast
        ttfb = prom.by('sum by (provider, le) (gateway_upstream_ttfb_seconds_bucket{le=~"0.1|0.25|\\\\+Inf"})',
                       "provider", "le")
        # its two answers and two content filters were quick
        assert ttfb[("maxtoken", "+Inf")] == 7 and ttfb[("maxtoken", "0.1")] == 4
        assert ttfb[("token360", "0.1")] == ttfb[("token360", "+Inf")] == attempts["token360"]
        assert prom.by("sum(gateway_inflight_requests)") == {(): 0.0}

        clients = sum(n for (_, status), n in load.seen.items() if status.startswith("4"))
        readme = readme_queries()
        assert len(readme) >= 8
        for query in readme:
            assert prom.query(query), f"README query returned no data: {query}"
        client_ratio = prom.by('sum(rate(gateway_requests_total{status=~"4.."}[5m])) '
                               '/ sum(rate(gateway_requests_total[5m]))')[()]
        assert abs(client_ratio - clients / total) < 0.01, (client_ratio, clients, total)
        for provider in (".*", "toapis"):
            for title, expr in dashboard_queries(provider):
                assert prom.query(expr), f"dashboard panel {title!r} returned no data (provider={provider}): {expr}"
        # requests rejected before any provider stay visible with a provider selected
        rejected = [expr for title, expr in dashboard_queries("toapis") if "by (status)" in expr]
        assert rejected and any(r["metric"].get("status") == "400" for r in prom.query(rejected[0]))


def test_readme_and_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Each query parses (promtool); quick, and it names the query that does not."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    rules = {"groups": [{"name": "check", "rules": [
        {"record": f"check:{i}", "expr": expr} for i, expr in
        enumerate([*readme_queries(), *(e for _, e in dashboard_queries())])]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
