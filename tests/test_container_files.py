"""The container files hold what issue 5 asks of them, read as files (no Docker engine needed):
Dockerfile, .dockerignore, docker-compose.yml, config/compose.yaml, config/prometheus.yml and
config/grafana-dashboard.json. The image itself is built and probed by ``shared/tools/container-smoke``."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import load

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = ["powertokens", "token360", "siliconflow", "toapis", "maxtoken"]

#: the metrics the gateway exports (issues 5 and 9), name -> type
METRICS = {
    "gateway_inter_token_seconds": "histogram",
    "gateway_overhead_seconds": "histogram",
    "gateway_build_info": "gauge",
    "gateway_config_reloads_total": "counter",
    "gateway_config_loaded_timestamp_seconds": "gauge",
    "gateway_requests_total": "counter",
    "gateway_request_duration_seconds": "histogram",
    "gateway_upstream_ttfb_seconds": "histogram",
    "gateway_time_to_first_token_seconds": "histogram",
    "gateway_tokens_total": "counter",
    "gateway_inflight_requests": "gauge",
    "gateway_upstream_attempts_total": "counter",
    "gateway_rejections_total": "counter",
    "gateway_provider_up": "gauge",
}


# --- Dockerfile -------------------------------------------------------------------------------------

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            stages.append([])
        assert stages, f"{instruction[0]} before the first FROM"
        stages[-1].append(instruction)
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            for item in shlex.split(args):
                name, sep, value = item.partition("=")
                assert sep, f"ENV in the legacy 'NAME value' form: {args}"
                env[name] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> list[list[tuple[str, str]]]:
    return _stages(_instructions((ROOT / "Dockerfile").read_text()))


def _from(stage: list[tuple[str, str]]) -> tuple[str, str | None]:
    words = [w for w in stage[0][1].split() if not w.startswith("--")]
    return words[0], (words[2] if len(words) == 3 and words[1].upper() == "AS" else None)


def test_dockerfile_is_multi_stage_on_official_python_slim(dockerfile):
    assert len(dockerfile) >= 2, "a builder stage and a runtime stage"
    names: set[str] = set()
    for stage in dockerfile:
        image, name = _from(stage)
        if image not in names:  # FROM an earlier stage is fine
            assert re.fullmatch(r"(docker\.io/)?(library/)?python:3\.\d+(\.\d+)?-slim(-[a-z]+)?", image), image
        if name:
            names.add(name)
    final = dockerfile[-1]
    copied_from = [re.search(r"--from=(\S+)", args).group(1) for word, args in final
                   if word == "COPY" and "--from=" in args]
    assert copied_from and set(copied_from) <= names, "the runtime stage copies from the builder stage"


def test_builder_installs_a_wheel_not_an_editable_checkout(dockerfile):
    build = " ".join(args for stage in dockerfile[:-1] for word, args in stage if word == "RUN")
    assert "pip wheel" in build or "python -m build" in build or "pip install ." in build, build
    assert " -e " not in build and "--editable" not in build


def test_runtime_runs_as_a_non_root_user(dockerfile):
    users = [args for word, args in dockerfile[-1] if word == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]


def test_healthcheck_probes_healthz(dockerfile):
    checks = [args for word, args in dockerfile[-1] if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "/healthz" in checks[0], checks
    assert not checks[0].upper().startswith("NONE")
    assert "curl" not in checks[0], "slim images have no curl"


def test_listens_on_8000_with_the_config_in_etc(dockerfile):
    final = dockerfile[-1]
    assert "8000" in " ".join(args for word, args in final if word == "EXPOSE").split()
    env = _env(final)
    assert env["GATEWAY_CONFIG"] == "/etc/gateway/gateway.yaml"
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert env["GATEWAY_PORT"] == "8000"
    copies = [args.split() for word, args in final if word == "COPY" and "--from=" not in args]
    assert ["config/gateway.yaml", "/etc/gateway/gateway.yaml"] in copies


def test_starts_with_gateway_serve_in_exec_form(dockerfile):
    final = dockerfile[-1]
    entrypoint = [_exec_form(args) for word, args in final if word == "ENTRYPOINT"]
    cmd = [_exec_form(args) for word, args in final if word == "CMD"]
    command = (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])
    assert command[:2] == ["gateway", "serve"], command


def test_dockerfile_says_the_container_needs_client_keys():
    assert "GATEWAY_API_KEYS" in (ROOT / "Dockerfile").read_text()


# --- .dockerignore ----------------------------------------------------------------------------------

def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent folders, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        forms = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_image_needs_and_no_secrets(dockerfile):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    for path in [".env", ".git/config", ".venv/bin/python", "gateway/__pycache__/cli.cpython-311.pyc"]:
        assert _ignored(path, patterns), f"{path} would be sent to the builder"
    needed = ["pyproject.toml", "README.md", "gateway/cli.py", "gateway/profiles/siliconflow.yaml"]
    for stage in dockerfile:
        for word, args in stage:
            if word in {"COPY", "ADD"} and "--from=" not in args:
                needed += [s.rstrip("/") for s in args.split()[:-1] if not s.startswith("--")]
    for path in needed:
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"
        assert not _ignored(path, patterns), f"the Dockerfile copies {path}, but .dockerignore leaves it out"


# --- docker-compose.yml -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command(service: dict) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def test_compose_services(compose):
    services = compose["services"]
    assert {"simulator", "gateway", "prometheus"} <= set(services)
    gateway, simulator = services["gateway"], services["simulator"]
    assert gateway.get("build") and gateway["image"] == simulator["image"], "one image for both"
    assert _command(simulator) == ["gateway", "simulate", "--host", "0.0.0.0", "--port", "9000"]
    assert "8000:8000" in [str(p) for p in gateway["ports"]]
    assert "simulator" in gateway["depends_on"]
    env = gateway["environment"]
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    assert re.fullmatch(r"\$\{GATEWAY_API_KEYS:-\S+\}", env["GATEWAY_API_KEYS"]), \
        "client keys from the environment, with a default"
    assert "./config/compose.yaml:/etc/gateway/gateway.yaml:ro" in gateway["volumes"]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    assert any(str(v).startswith("./config/prometheus.yml:") for v in prometheus["volumes"])
    assert "9090:9090" in [str(p) for p in prometheus["ports"]]


def test_compose_bind_mounts_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_compose_has_the_commented_switch_to_real_keys():
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"^\s*#\s*env_file:\s*\.env\s*$", text, re.M)
    assert re.search(r"^\s*#\s*-\s*\./config/gateway\.yaml:/etc/gateway/gateway\.yaml", text, re.M)


def test_compose_config_routes_every_alias_to_the_simulator(compose):
    config = load(ROOT / "config" / "compose.yaml")
    simulate = _command(compose["services"]["simulator"])
    port = int(simulate[simulate.index("--port") + 1])
    assert sorted(p.profile.name for p in config.providers.values()) == sorted(PROVIDERS)
    for provider in config.providers.values():
        assert provider.enabled, f"{provider.name} needs no key variable in the compose stack"
        url = urlsplit(provider.base_url)
        assert (url.scheme, url.hostname, url.port) == ("http", "simulator", port), provider.base_url
        assert url.path.rstrip("/") == f"/{provider.profile.name}/v1", provider.base_url
    for alias, routes in config.models.items():
        assert routes and all(r.provider.base_url.startswith("http://simulator:") for r in routes), alias
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert set(config.models) == set(demo["models"])


# --- config/prometheus.yml --------------------------------------------------------------------------

def test_prometheus_scrapes_the_gateway_metrics():
    prometheus = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    jobs = [job for job in prometheus["scrape_configs"]
            if any("gateway:8000" in t for sc in job.get("static_configs", []) for t in sc["targets"])]
    assert jobs, "a job scraping gateway:8000"
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", prometheus.get("global", {}).get("scrape_interval")) == "5s"


# --- config/grafana-dashboard.json ------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())


def _queries(dashboard: dict) -> list[str]:
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_dashboard_is_a_grafana_dashboard(dashboard):
    assert dashboard["schemaVersion"] >= 36 and dashboard["title"] and dashboard["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert all(t["datasource"]["type"] == "prometheus" for t in panel["targets"]), panel["title"]


def test_dashboard_queries_only_exported_metrics_and_all_of_them(dashboard):
    used = set()
    for query in _queries(dashboard):
        names = re.findall(r"\bgateway_[a-z0-9_]+", query)
        assert names or re.search(r"\bprocess_[a-z_]+\{", query), f"no gateway metric in {query}"
        for name in names:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in METRICS:
                assert METRICS[name] != "histogram", f"{name}: query a histogram's _bucket, _sum or _count"
                used.add(name)
            else:
                assert METRICS.get(base) == "histogram", f"{name} is not a metric the gateway exports"
                used.add(base)
        if "histogram_quantile" in query:
            assert re.search(r"by \([^)]*\ble\b", query) and "_bucket" in query, query
    assert used == set(METRICS), f"no panel for {sorted(set(METRICS) - used)}"


def test_dashboard_has_the_panels_issue_5_lists(dashboard):
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for words in ["status", "error rate", "p50", "p99", "ttfb", "first token", "tokens", "in-flight",
                  "attempts", "rejections", "up"]:
        assert words in titles, f"no panel titled with {words!r}: {titles}"
    errors = [p for p in dashboard["panels"] if "error rate" in p["title"].lower()]
    assert len(errors) == 2, "client errors apart from gateway/upstream errors (issue 9)"
    for panel in errors:
        assert "or vector(0)" in panel["targets"][0]["expr"], f"{panel['title']}: 0, not No data, when nothing failed"
    for title in ("inter-token", "overhead", "build", "processes"):
        assert title in titles, f"no panel for {title} (issue 9)"
