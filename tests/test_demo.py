"""`gateway demo` and `gateway simulate` as a new user runs them: real processes, real ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import openai

from tests.servers import free_port, stop

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process, signal.SIGINT)


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_demo_serves_every_alias_keyless_and_prints_how_to_use_it() -> None:
    port = free_port()
    with running("demo", "--port", str(port)) as process:
        wait_for(f"http://127.0.0.1:{port}/readyz")
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as client:
            aliases = [m.id for m in client.models.list()]
            assert len(aliases) == 7 and aliases[-2:] == ["claude-haiku-*", "claude-*"]
            for alias in aliases:
                answer = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "Hello"}])
                assert answer.choices[0].message.content == "Echo: Hello"
            streamed = client.chat.completions.create(model="glm-4.7", stream=True, reasoning_effort="high",
                                                      messages=[{"role": "user", "content": "Hello"}])
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Echo: Hello"
        # Claude Code's names reach an upstream through the patterns (README, "Front doors")
        with anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="unused", max_retries=0) as claude:
            message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                                             messages=[{"role": "user", "content": "Hello"}])
            assert message.content[-1].text == "Echo: Hello" and message.model == "claude-sonnet-4-5"
    output = process.stdout.read() if process.stdout else ""
    assert f"Base URL: http://127.0.0.1:{port}/v1" in output
    assert "curl http://127.0.0.1" in output and "from openai import OpenAI" in output
    assert process.returncode in (0, -signal.SIGINT)


def test_simulate_serves_the_five_upstreams() -> None:
    port = free_port()
    with running("simulate", "--port", str(port)):
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/_sim/health")
        for provider in ("powertokens", "token360", "siliconflow", "toapis", "maxtoken"):
            response = httpx.post(f"{base}/{provider}/v1/chat/completions", headers={"Authorization": "Bearer k"},
                                  json={"model": "m", "stream": False, "messages": [{"role": "user", "content": "x"}]})
            assert response.status_code == 200, (provider, response.text)
