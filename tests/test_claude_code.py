"""Claude Code itself (npm @anthropic-ai/claude-code, ``claude -p``) on the gateway's Messages door,
offline against the simulators (issue 12, "Done when"): a task that needs a real tool call (Bash
writes a file), the tool's result sent back, the answer printed, on every upstream that takes a
tool turn. ``make test`` installs the pinned client into .clients/."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.simulator.answers import text_of
from tests.conftest import CLIENT_KEY, Simulator
from tests.doors import THINKERS, TOOL_TAKERS, gateway_per_upstream

ROOT = Path(__file__).resolve().parent.parent
CLAUDE = Path(os.environ.get("CLAUDE_BIN", ROOT / ".clients" / "node_modules" / ".bin" / "claude"))
pytestmark = pytest.mark.skipif(not CLAUDE.exists(), reason=f"Claude Code is not installed at {CLAUDE} "
                                                             "(make test-clients)")


@pytest.fixture(scope="module")
def gateways(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with gateway_per_upstream(sim, tmp_path_factory, "claude-*") as urls:
        yield urls


def claude(url: str, prompt: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": CLIENT_KEY,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "8192"}  # within every page's max_tokens (the README says why)
    return subprocess.run([str(CLAUDE), "-p", prompt, "--allowedTools", "Bash", "--output-format", "json"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("provider", TOOL_TAKERS)
def test_claude_code_runs_a_tool_using_task_on_every_upstream(gateways: dict[str, str], sim: Simulator,
                                                              provider: str, tmp_path: Path) -> None:
    proof = tmp_path / "proof.txt"
    sim.control(provider=provider, tool_arguments={"command": f"echo gateway-ok-{provider} > {proof}",
                                                   "description": "write the proof file"})
    done = claude(gateways[provider], "Use Bash to write the proof file.", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["is_error"] is False and result["result"].startswith("Tool said:"), result
    assert proof.read_text().strip() == f"gateway-ok-{provider}"  # Claude Code ran the call it was given
    turns = [r["body"]["messages"] for r in sim.requests(provider)]
    answered = next(t for t in turns if any(m["role"] == "tool" for m in t))
    assistant = next(m for m in answered if m["role"] == "assistant" and m.get("tool_calls"))
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "Bash"
    result_message = next(m for m in answered if m["role"] == "tool")
    assert result_message["tool_call_id"] == call["id"]
    if provider in THINKERS:  # Claude Code asks for thinking; the reasoning goes back, byte for byte
        asked = next(m for m in reversed(turns[0]) if m["role"] == "user")
        assert assistant["reasoning_content"] == f"Thinking about: {text_of(asked['content'])}"
