"""Shared fixtures: the simulated upstreams and a gateway in front of them, both real servers on
loopback for the whole session; every test starts from a reset simulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.connections import GuardedProtocol
from gateway.settings import Settings
from gateway.simulator import create_app as create_simulator
from tests.redis_server import redis_url  # noqa: F401  (the fixture, for tests/test_state.py)
from tests.servers import serve

PROVIDERS = ["powertokens", "token360", "siliconflow", "toapis", "maxtoken"]
UPSTREAM_MODEL = {"powertokens": "glm-4.7-flash", "token360": "glm-5.1", "siliconflow": "Pro/zai-org/GLM-4.7",
                  "toapis": "glm-5", "maxtoken": "glm-5-turbo"}
UPSTREAM_KEYS = {p: f"sk-upstream-{p}" for p in PROVIDERS}
CLIENT_KEY = "sk-client-test"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (marked ``anyio``: the plugin ships with httpx) run on asyncio."""
    return "asyncio"


@dataclass
class Simulator:
    url: str
    http: httpx.Client

    def reset(self) -> None:
        self.http.post(f"{self.url}/_sim/reset").raise_for_status()

    def control(self, **knobs: Any) -> None:
        self.http.post(f"{self.url}/_sim/control", json=knobs).raise_for_status()

    def requests(self, provider: str | None = None) -> list[dict[str, Any]]:
        seen = self.http.get(f"{self.url}/_sim/requests").json()
        return [r for r in seen if provider is None or r["provider"] == provider]

    def last(self, provider: str | None = None) -> dict[str, Any]:
        seen = self.requests(provider)
        assert seen, f"nothing reached {provider or 'any upstream'}"
        return seen[-1]


def config_text(sim_url: str, extra_providers: str = "", extra_models: str = "") -> str:
    providers = "".join(
        f"  {p}:\n    base_url: {sim_url}/{p}/v1\n    api_key: {UPSTREAM_KEYS[p]}\n"
        "    timeout: {connect: 2, read: 5}\n"
        for p in PROVIDERS)
    models = "".join(f"  glm-{p}:\n    - provider: {p}\n      model: {UPSTREAM_MODEL[p]}\n" for p in PROVIDERS)
    models += (  # maxtoken takes no tool role; token360 does
        "  glm-fallback:\n    - {provider: maxtoken, model: glm-5-turbo}\n    - {provider: token360, model: glm-5.1}\n"
        "  glm-sf-qwq:\n    - {provider: siliconflow, model: Qwen/QwQ-32B}\n"
        "  glm-strict:\n    - {provider: powertokens, model: glm-4.7-flash}\n"
        "    - {provider: maxtoken, model: glm-5-turbo}\n")
    return f"providers:\n{providers}{extra_providers}models:\n{models}{extra_models}"


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    with serve(create_simulator(keys=UPSTREAM_KEYS)) as url, httpx.Client(timeout=10) as http:
        yield Simulator(url, http)


@pytest.fixture(autouse=True)
def _fresh_simulator(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()


def start_gateway(config: Path, **settings: Any) -> Any:
    """A gateway on a free port, on the connection protocol `gateway serve` uses, as a context
    manager yielding its base URL (request lines are not logged unless the test asks for
    ``log_level="info"``)."""
    return serve(create_app(Settings(config=str(config), **{"log_level": "warning", **settings})),
                 http=GuardedProtocol)


@pytest.fixture(scope="session")
def gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with start_gateway(path, api_keys=CLIENT_KEY) as url:
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as c:
        yield c
