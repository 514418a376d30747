"""The OpenAI Agents SDK on the Responses door (issue 13): a multi-turn run with a tool keeps the
upstream's reasoning between turns, on every upstream that reasons and takes a tool turn."""

from __future__ import annotations

from collections.abc import Iterator

import agents
import openai
import pytest
from openai.types.shared import Reasoning

from tests.conftest import CLIENT_KEY, Simulator
from tests.doors import ASK, THINKERS, door_gateway


@pytest.fixture(scope="module")
def door(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    agents.set_tracing_disabled(True)  # nothing leaves the machine
    with door_gateway(sim, tmp_path_factory) as url:
        yield url


@pytest.mark.parametrize("provider", THINKERS)
def test_a_multi_turn_agent_run_keeps_the_reasoning_between_turns(door: str, sim: Simulator, provider: str) -> None:
    calls = []

    @agents.function_tool
    def get_weather(query: str) -> str:
        """Weather for a city."""
        calls.append(query)
        return "sunny, 21 C"

    client = openai.AsyncOpenAI(base_url=f"{door}/v1", api_key=CLIENT_KEY, max_retries=0)
    agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(model=f"glm-{provider}", openai_client=client),
                         model_settings=agents.ModelSettings(reasoning=Reasoning(effort="high")))
    first = agents.Runner.run_sync(agent, ASK)
    assert calls == [ASK] and first.final_output == "Tool said: sunny, 21 C"
    second = agents.Runner.run_sync(agent, [*first.to_input_list(), {"role": "user", "content": "and tomorrow?"}])
    assert second.final_output == "Echo: and tomorrow?"
    sent = sim.last(provider)["body"]["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant" and m.get("tool_calls"))
    assert assistant["reasoning_content"] == f"Thinking about: {ASK}"  # byte for byte, a turn later
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
