"""One simulator (no keys) on loopback for the simulator suite, reset before every test.

Fixture names avoid the root conftest's ``sim``/``client``/``http``, which front the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.simulator import create_app
from tests.servers import serve


@pytest.fixture(scope="session")
def sim_server() -> Iterator[str]:
    with serve(create_app()) as url:
        yield url


@pytest.fixture(scope="session")
def web() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def sim_url(sim_server: str, web: httpx.Client) -> str:
    """The simulator's base URL, with no recorded requests and no controls."""
    web.post(f"{sim_server}/_sim/reset").raise_for_status()
    return sim_server
