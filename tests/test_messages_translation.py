"""The Messages front door's two pure translations (issue 12), on their own: request -> chat body,
chat answer / chunks -> Message / events. The same door over HTTP, through the anthropic SDK and
Claude Code, is in test_messages.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.doors.messages_answer import MessageEvents, message, signature
from gateway.doors.messages_request import to_chat
from gateway.errors import InvalidRequest

USER = {"role": "user", "content": "hi"}


def chat_of(**body: Any) -> dict[str, Any]:
    return to_chat({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [USER], **body}).chat


def test_system_text_and_blocks_lead_and_system_turns_stay_where_they_stand() -> None:
    chat = chat_of(system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
                   messages=[USER, {"role": "system", "content": "now in French"}, USER])
    assert chat["messages"] == [{"role": "system", "content": "be brief\n\nbe kind"}, USER,
                                {"role": "system", "content": "now in French"}, USER]
    assert chat_of(system="short")["messages"][0] == {"role": "system", "content": "short"}


def test_a_tool_loop_turns_into_tool_calls_and_tool_messages_with_the_reasoning_byte_for_byte() -> None:
    reasoning = "I should call the tool.\n  Twice,\tmaybe \u00e9 \U0001f600"
    translated = to_chat({"model": "m", "max_tokens": 10, "messages": [
        USER,
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": reasoning, "signature": signature(reasoning)},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "read", "input": {"path": "a.txt"}},
            {"type": "tool_use", "id": "call_2", "name": "read", "input": {"raw_arguments": "not {json"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "alpha"},
            {"type": "tool_result", "tool_use_id": "call_2", "is_error": True,
             "content": [{"type": "text", "text": "no such file"}]},
            {"type": "text", "text": "and now?"}]}]})
    assert translated.chat["messages"][1:] == [
        {"role": "assistant", "content": "Let me look.", "reasoning_content": reasoning, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a.txt"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "read", "arguments": "not {json"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "alpha"},
        {"role": "tool", "tool_call_id": "call_2", "content": "[tool error] no such file"},
        {"role": "user", "content": "and now?"}]
    # a limit broken by the chat body is named as the client sent it
    assert translated.origins == ["messages[0]", "messages[1]", "messages[2].content[0]", "messages[2].content[1]",
                                  "messages[2]"]
    assert translated.client_param("messages[3].content") == "messages[2].content[1].content"
    assert translated.client_param("stop") == "stop_sequences"


def test_images_become_image_url_parts_and_documents_file_parts() -> None:
    content = [{"type": "text", "text": "what is it?"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"}},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
               {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]
    parts = chat_of(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert parts == [{"type": "text", "text": "what is it?"},
                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0"}},
                     {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                     {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]


@pytest.mark.parametrize("thinking, output_config, expected", [
    ({"type": "enabled", "budget_tokens": 2048}, None, {"thinking": {"type": "enabled"}, "thinking_budget": 2048}),
    ({"type": "disabled"}, None, {"thinking": {"type": "disabled"}}),
    ({"type": "adaptive"}, None, {"thinking": {"type": "auto"}}),
    (None, {"effort": "high"}, {"reasoning_effort": "high"}),
])
def test_thinking_becomes_the_one_intent(thinking: Any, output_config: Any, expected: dict[str, Any]) -> None:
    chat = chat_of(thinking=thinking, output_config=output_config)
    assert {k: chat[k] for k in ("thinking", "thinking_budget", "reasoning_effort") if k in chat} == expected


def test_parameters_tools_and_tool_choice_map_and_what_a_chat_upstream_cannot_do_is_dropped_by_name() -> None:
    translated = to_chat({
        "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
        "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 40, "metadata": {"user_id": "u-1"},
        "tools": [{"name": "read", "description": "read a file", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "container": "c-1", "mcp_servers": [], "service_tier": "auto", "stream": True})
    chat = translated.chat
    assert chat["stop"] == ["END"] and chat["temperature"] == 0.5 and chat["top_p"] == 0.9 and chat["top_k"] == 40
    assert chat["user"] == "u-1" and chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["tools"] == [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"},
                                                               "description": "read a file"}}]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert translated.dropped == ["cache_control", "tools.web_search_20250305", "container", "mcp_servers",
                                  "service_tier"]
    assert not {"container", "mcp_servers", "service_tier", "metadata", "stop_sequences"} & set(chat)
    assert to_chat({"model": "m", "max_tokens": 1, "messages": [USER], "tool_choice": {"type": "tool", "name": "read"}}
                   ).chat["tool_choice"] == {"type": "function", "function": {"name": "read"}}


def test_redacted_thinking_is_dropped_and_named() -> None:
    translated = to_chat({"model": "m", "max_tokens": 1, "messages": [
        USER, {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"},
                                                {"type": "text", "text": "ok"}]}, USER]})
    assert translated.dropped == ["redacted_thinking"]
    assert translated.chat["messages"][1] == {"role": "assistant", "content": "ok"}


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [USER]}, "max_tokens"),
    ({"model": "m", "max_tokens": "5", "messages": [USER]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [USER]}, "model"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
     "messages[0].content[0].source"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "output_config": {"effort": "max"}}, "output_config.effort"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "tool_choice": {"type": "tool"}}, "tool_choice"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "system": 5}, "system"),
])
def test_a_request_that_is_not_a_messages_request_is_a_400_naming_its_field(body: dict[str, Any],
                                                                            param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        to_chat(body)
    assert raised.value.param == param


def test_a_chat_answer_becomes_a_message() -> None:
    answer = {"id": "x", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Reading.", "reasoning_content": "think",
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "read", "arguments": '{"p": 1}'}},
                       {"id": "call_10", "type": "function", "function": {"name": "read", "arguments": "[1, 2]"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}}
    assert message(answer, "claude-x", "r1") == {
        "id": "msg_r1", "type": "message", "role": "assistant", "model": "claude-x", "content": [
            {"type": "thinking", "thinking": "think", "signature": signature("think")},
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "call_9", "name": "read", "input": {"p": 1}},
            {"type": "tool_use", "id": "call_10", "name": "read", "input": {"raw_arguments": "[1, 2]"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 60,
                  "cache_creation_input_tokens": 0}}


@pytest.mark.parametrize("finish, stop_reason", [("stop", "end_turn"), ("length", "max_tokens"),
                                                 ("tool_calls", "tool_use"), ("sensitive", "refusal"),
                                                 ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop_reason: str) -> None:
    answer = {"choices": [{"finish_reason": finish, "message": {"content": "x"}}]}
    assert message(answer, "m", "r")["stop_reason"] == stop_reason


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


def call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"index": index, "id": call_id, "function": {"name": name, "arguments": arguments}}


def replay(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    events = MessageEvents("claude-x", "r1")
    raw = [e for c in chunks for e in events.chunk(c)] + events.end()
    out = []
    for item in raw:
        name, data = item.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        parsed = orjson.loads(data[6:])
        assert parsed["type"] == name[7:].decode()
        out.append((parsed["type"], parsed))
    return out


def test_a_stream_opens_and_closes_blocks_in_order_with_the_signature_before_thinking_stops() -> None:
    events = replay([chunk({"role": "assistant", "reasoning_content": "Let me"}), chunk({"reasoning_content": " see"}),
                     chunk({"content": "Sure"}),
                     chunk({"tool_calls": [call(0, "call_1", "read", "")]}),
                     chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"p":'}}]}),
                     chunk({"content": " (reading)"}),  # text while a call is open waits for it to close
                     chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a"}'}}]}),
                     chunk({"tool_calls": [call(1, "call_2", "ls", "{}")]}),
                     chunk(finish="tool_calls"),
                     {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}])
    kinds = [(kind, data.get("index"), (data.get("delta") or data.get("content_block") or {}).get("type"))
             for kind, data in events]
    assert kinds == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"), ("content_block_stop", 2, None),
        ("content_block_start", 3, "text"), ("content_block_delta", 3, "text_delta"), ("content_block_stop", 3, None),
        ("content_block_start", 4, "tool_use"), ("content_block_delta", 4, "input_json_delta"),
        ("content_block_stop", 4, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    assert events[4][1]["delta"]["signature"] == signature("Let me see")
    assert events[9][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "read", "input": {}}
    arguments = "".join(d["delta"]["partial_json"] for k, d in events if d.get("index") == 2 and k.endswith("delta"))
    assert orjson.loads(arguments) == {"p": "a"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 4 and events[-2][1]["usage"]["input_tokens"] == 9


def test_adaptive_thinking_with_an_effort_is_the_effort_as_claude_code_sends_it() -> None:
    chat = chat_of(thinking={"type": "adaptive"}, output_config={"effort": "high"})
    assert chat["reasoning_effort"] == "high" and "thinking" not in chat
