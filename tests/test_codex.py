"""Codex CLI itself (npm @openai/codex, ``codex exec``) on the gateway's Responses door, offline
against the simulators (issue 13, "Done when"): a task that needs a shell call (exec_command
writes a file), the call's output sent back, on every upstream that takes a tool turn, with the
upstream's reasoning handed back byte for byte (``store = false``: through the reasoning item).
``make test`` installs the pinned client into .clients/; the config.toml is the README's."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.simulator.answers import text_of
from tests.conftest import CLIENT_KEY, Simulator
from tests.doors import THINKERS, TOOL_TAKERS, gateway_per_upstream

ROOT = Path(__file__).resolve().parent.parent
CODEX = Path(os.environ.get("CODEX_BIN", ROOT / ".clients" / "node_modules" / ".bin" / "codex"))
pytestmark = pytest.mark.skipif(not CODEX.exists(), reason=f"Codex CLI is not installed at {CODEX} "
                                                           "(make test-clients)")
CONFIG = """model = "glm-5"
model_provider = "gateway"
model_reasoning_effort = "high"

[model_providers.gateway]
name = "GLM gateway"
base_url = "{url}/v1"
env_key = "GATEWAY_API_KEY"
wire_api = "responses"
"""


@pytest.fixture(scope="module")
def gateways(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with gateway_per_upstream(sim, tmp_path_factory, "glm-5") as urls:
        yield urls


def codex(url: str, prompt: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    home = workdir.parent / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(CONFIG.format(url=url))
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir.parent), "CODEX_HOME": str(home),
           "GATEWAY_API_KEY": CLIENT_KEY}
    # no sandbox: this machine has no user namespaces for bubblewrap; the command is the test's own
    return subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                           prompt], cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("provider", TOOL_TAKERS)
def test_codex_runs_a_shell_task_on_every_upstream(gateways: dict[str, str], sim: Simulator, provider: str,
                                                   tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proof = work / "proof.txt"
    sim.control(provider=provider, tool_arguments={"cmd": f"echo codex-ok-{provider} > {proof}"})
    done = codex(gateways[provider], "Use exec_command to write the proof file.", work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proof.read_text().strip() == f"codex-ok-{provider}"  # Codex ran the call it was given
    assert "Tool said:" in done.stdout
    turns = [r["body"]["messages"] for r in sim.requests(provider)]
    answered = next(t for t in turns if any(m["role"] == "tool" for m in t))
    assistant = next(m for m in answered if m["role"] == "assistant" and m.get("tool_calls"))
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "exec_command"
    assert next(m for m in answered if m["role"] == "tool")["tool_call_id"] == call["id"]
    if provider in THINKERS:
        asked = next(m for m in reversed(turns[0]) if m["role"] == "user")
        assert assistant["reasoning_content"] == f"Thinking about: {text_of(asked['content'])}"
