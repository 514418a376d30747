"""Tool calling end to end through the SDK: the call, its streamed arguments, and the result turn."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import CLIENT_KEY, Simulator

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
ASK = "Please call get_weather for Paris"
TOOL_TAKERS = ["powertokens", "token360", "siliconflow", "toapis"]  # maxtoken's roles have no tool


def result_turn(call_id: str, arguments: str) -> list[dict]:
    return [{"role": "user", "content": ASK},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}]


@pytest.mark.parametrize("provider", TOOL_TAKERS)
def test_tool_loop_without_streaming(client: openai.OpenAI, sim: Simulator, provider: str) -> None:
    first = client.chat.completions.create(model=f"glm-{provider}", messages=[{"role": "user", "content": ASK}],
                                           tools=TOOLS, tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"query": ASK}
    assert sim.last(provider)["body"]["tools"] == TOOLS
    second = client.chat.completions.create(model=f"glm-{provider}", tools=TOOLS,
                                            messages=result_turn(call.id, call.function.arguments))
    assert second.choices[0].message.content == "Tool said: sunny, 21 C"
    assert sim.last(provider)["body"]["messages"][2] == {"role": "tool", "tool_call_id": call.id,
                                                         "content": "sunny, 21 C"}


@pytest.mark.anyio
@pytest.mark.parametrize("provider", TOOL_TAKERS)
async def test_tool_loop_streaming_with_arguments_in_pieces(gateway: str, provider: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=f"glm-{provider}", messages=[{"role": "user", "content": ASK}], tools=TOOLS, stream=True)
        pieces, call_id, finish = [], None, None
        async for chunk in stream:
            for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                call_id = delta_call.id or call_id
                if delta_call.function and delta_call.function.arguments:
                    pieces.append(delta_call.function.arguments)
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert finish == "tool_calls" and len(pieces) >= 3  # relayed as the upstream split them
        arguments = "".join(pieces)
        assert json.loads(arguments) == {"query": ASK}
        stream = await client.chat.completions.create(
            model=f"glm-{provider}", messages=result_turn(call_id, arguments), tools=TOOLS, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Tool said: sunny, 21 C"


def test_maxtoken_takes_the_call_but_not_the_result_turn(client: openai.OpenAI, sim: Simulator) -> None:
    first = client.chat.completions.create(model="glm-maxtoken", messages=[{"role": "user", "content": ASK}],
                                           tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="glm-maxtoken", messages=result_turn(call.id, call.function.arguments))
    assert info.value.body["param"] == "messages[2].role"
    assert "role 'tool' is not one of assistant, system, user for maxtoken" in info.value.body["message"]
    assert len(sim.requests("maxtoken")) == 1
