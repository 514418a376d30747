"""Knobs (headers, controls, instance defaults), the control endpoints and the request log."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import httpx
import pytest

from gateway.simulator import create_app
from tests.servers import serve

from .util import AUTH, PROVIDERS, body, chat, chunks, deltas, error_message, sse_data


def control(web: httpx.Client, url: str, **knobs: Any) -> None:
    web.post(f"{url}/_sim/control", json=knobs).raise_for_status()


def open_stream(web: httpx.Client, url: str, provider: str, headers: dict[str, str], **kw: Any) -> Any:
    return web.stream(
        "POST",
        f"{url}/{provider}/v1/chat/completions",
        json=body(provider, stream=True),
        headers={**AUTH, **headers},
        **kw,
    )


def test_ttfb(sim_url: str, web: httpx.Client) -> None:
    start = time.monotonic()
    assert chat(web, sim_url, "toapis", body("toapis"), {"x-sim-ttfb-ms": "300"}).status_code == 200
    assert time.monotonic() - start >= 0.29
    control(web, sim_url, ttfb_ms=200, provider="maxtoken")
    start = time.monotonic()
    chat(web, sim_url, "maxtoken", body("maxtoken"))
    assert time.monotonic() - start >= 0.19
    start = time.monotonic()
    chat(web, sim_url, "toapis", body("toapis"))  # other provider: not delayed
    assert time.monotonic() - start < 0.15


def test_chunk_delay(sim_url: str, web: httpx.Client) -> None:
    start = time.monotonic()
    text = chat(
        web, sim_url, "toapis", body("toapis", stream=True), {"x-sim-chunk-delay-ms": "50", "x-sim-words": "3"}
    ).text
    events = sse_data(text)
    assert len(events) == 1 + 3 + 1 + 1  # role, 3 words, final, [DONE]
    assert time.monotonic() - start >= 0.05 * (len(events) - 1) - 0.01


@pytest.mark.parametrize("provider", PROVIDERS)
def test_words(sim_url: str, web: httpx.Client, provider: str) -> None:
    data = chat(web, sim_url, provider, body(provider), {"x-sim-words": "5"}).json()
    assert data["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    assert data["usage"]["completion_tokens"] == 5
    text = chat(web, sim_url, provider, body(provider, stream=True), {"x-sim-words": "5"}).text
    assert deltas(text, "content")[1:] == ["w0", " w1", " w2", " w3", " w4"]
    assert (
        chat(web, sim_url, provider, body(provider), {"x-sim-words": "0"}).json()["choices"][0]["message"]["content"]
        == ""
    )


def test_status_count_and_retry_after(sim_url: str, web: httpx.Client) -> None:
    control(web, sim_url, provider="toapis", status=429, count=2)
    first, second, third = (chat(web, sim_url, "toapis", body("toapis")) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["retry-after"] == "1"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert chat(web, sim_url, "maxtoken", body("maxtoken")).status_code == 200  # other provider untouched
    control(web, sim_url, status=429, retry_after=7, count=1)
    assert chat(web, sim_url, "siliconflow", body("siliconflow")).headers["retry-after"] == "7"
    response = chat(web, sim_url, "token360", body("token360"), {"x-sim-status": "429", "x-sim-retry-after": "3"})
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
    response = chat(web, sim_url, "token360", body("token360"), {"x-sim-status": "429", "x-sim-retry-after": "0"})
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert "retry-after" not in chat(web, sim_url, "toapis", body("toapis"), {"x-sim-status": "500"}).headers


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [401, 403, 429, 500, 503, 529])
def test_status_in_provider_shape(sim_url: str, web: httpx.Client, provider: str, status: int) -> None:
    for stream in (False, True):
        response = chat(web, sim_url, provider, body(provider, stream=stream), {"x-sim-status": str(status)})
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        message = error_message(provider, response.json())
    if provider == "maxtoken" and status == 403:  # maxtoken.txt:162
        assert "permission" in message and "insufficient balance" in message
    if provider == "maxtoken":
        assert response.json()["error"]["code"] == status


def test_status_after_validation(sim_url: str, web: httpx.Client) -> None:
    response = chat(web, sim_url, "toapis", body("toapis", temperature=7), {"x-sim-status": "503"})
    assert response.status_code == 400


def test_controls_stack_and_header_wins(sim_url: str, web: httpx.Client) -> None:
    control(web, sim_url, words=2)
    control(web, sim_url, words=4, provider="toapis", count=1)

    def content(provider: str, headers: dict[str, str] | None = None) -> str:
        message = chat(web, sim_url, provider, body(provider), headers).json()["choices"][0]["message"]
        return str(message["content"])

    assert content("toapis") == "w0 w1 w2 w3"  # newest matching control
    assert content("toapis") == "w0 w1"  # count used up: back to the older one
    assert content("maxtoken", {"x-sim-words": "1"}) == "w0"  # header beats controls
    control(web, sim_url, words=None)  # null leaves the knob to older layers
    assert content("maxtoken") == "w0 w1"
    web.post(f"{sim_url}/_sim/reset").raise_for_status()
    assert content("maxtoken") == "Echo: hello there"


def test_bad_knobs(sim_url: str, web: httpx.Client) -> None:
    for bad in (
        {"nope": 1},
        {"words": -1},
        {"status": 200},
        {"provider": "openai"},
        {"count": 0},
        {"keepalive": "maybe"},
        {"error_after": -1},
        {"error_after": 1.5},
        {"drip_ms": -1},
        {"drip_ms": "slow"},
        {"error_code": True},
        {"error_code": 1.5},
        {"error_code": ""},
        {"error_code": ["1113"]},
    ):
        response = web.post(f"{sim_url}/_sim/control", json=bad)
        assert response.status_code == 400 and "sim_error" in response.json(), bad
    assert web.post(f"{sim_url}/_sim/control", content=b"{").status_code == 400
    for name, value in (("words", "many"), ("drip-ms", "-5"), ("error-after", "x"), ("error-code", "")):
        response = chat(web, sim_url, "toapis", body("toapis"), {f"x-sim-{name}": value})
        assert response.status_code == 400 and "sim_error" in response.json(), name


def read_stream(
    web: httpx.Client, url: str, provider: str, headers: dict[str, str], **kw: Any
) -> tuple[list[str], Any]:
    """The data lines received, and the transport error that ended the stream (None if it completed)."""
    received: list[str] = []
    try:
        with open_stream(web, url, provider, headers, **kw) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(line[len("data: ") :])
    except httpx.TransportError as exc:
        return received, exc
    return received, None


def test_reset_after(sim_url: str, web: httpx.Client) -> None:
    received, error = read_stream(web, sim_url, "siliconflow", {"x-sim-reset-after": "3"})
    assert isinstance(error, httpx.RemoteProtocolError)
    assert len(received) == 3 and all(json.loads(data) for data in received)
    # K past the end: every chunk arrives, then the reset comes instead of [DONE]
    received, error = read_stream(web, sim_url, "toapis", {"x-sim-reset-after": "999"})
    assert isinstance(error, httpx.RemoteProtocolError)
    assert json.loads(received[-1])["choices"][0]["finish_reason"] == "stop"
    assert web.get(f"{sim_url}/_sim/health").json() == {"ok": True}


def test_stall_after(sim_url: str, web: httpx.Client) -> None:
    start = time.monotonic()
    received, error = read_stream(
        web, sim_url, "maxtoken", {"x-sim-stall-after": "2"}, timeout=httpx.Timeout(5, read=0.5)
    )
    assert isinstance(error, httpx.ReadTimeout)
    assert len(received) == 2 and time.monotonic() - start < 3
    assert web.get(f"{sim_url}/_sim/health").status_code == 200


def test_malformed_after(sim_url: str, web: httpx.Client) -> None:
    text = chat(web, sim_url, "token360", body("token360", "a b", stream=True), {"x-sim-malformed-after": "2"}).text
    data = sse_data(text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[2])
    rest = data[:2] + data[3:]
    assert rest[-1] == "[DONE]" and all(json.loads(d) for d in rest[:-1])
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in map(json.loads, rest[:-1])) == "Echo: a b"


def test_split_writes_are_seen_as_partial_reads(sim_url: str, web: httpx.Client) -> None:
    whole = chat(web, sim_url, "toapis", body("toapis", stream=True)).text
    with open_stream(web, sim_url, "toapis", {"x-sim-split-writes": "true"}) as response:
        reads = [piece for piece in response.iter_raw() if piece]
    text = b"".join(reads).decode()
    assert [json.loads(d)["choices"] for d in sse_data(text)[:-1]] == [
        json.loads(d)["choices"] for d in sse_data(whole)[:-1]
    ]
    partial = [r for r in reads if not r.endswith(b"\n\n")]
    assert len(reads) >= 2 * len(sse_data(text)) and len(partial) >= len(sse_data(text))


def test_keepalive(sim_url: str, web: httpx.Client) -> None:
    text = chat(web, sim_url, "powertokens", body("powertokens", "a", stream=True), {"x-sim-keepalive": "1"}).text
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[0] == ": keep-alive"
    assert blocks[1::2] == [f"data: {d}" for d in sse_data(text)]
    assert set(blocks[0::2]) == {": keep-alive"}
    assert "".join(deltas(text, "content")) == "Echo: a"


def test_requests_are_recorded(sim_url: str, web: httpx.Client) -> None:
    chat(web, sim_url, "token360", body("token360", "hi"), {"X-Custom": "Yes"})
    chat(web, sim_url, "maxtoken", b"{not json")
    web.post(f"{sim_url}/nowhere/v1/x", content=b"raw")
    seen = web.get(f"{sim_url}/_sim/requests").json()
    assert [r["provider"] for r in seen] == ["token360", "maxtoken", "nowhere"]
    first = seen[0]
    assert first["path"] == "/token360/v1/chat/completions"
    assert first["headers"]["x-custom"] == "Yes" and first["headers"]["authorization"] == AUTH["authorization"]
    assert first["body"] == body("token360", "hi") and json.loads(first["raw"]) == first["body"]
    assert seen[1]["body"] is None and seen[1]["raw"] == "{not json"
    web.post(f"{sim_url}/_sim/reset").raise_for_status()
    assert web.get(f"{sim_url}/_sim/requests").json() == []


def test_request_log_is_bounded(sim_url: str, web: httpx.Client) -> None:
    for i in range(1005):
        web.post(f"{sim_url}/nowhere/{i}")
    seen = web.get(f"{sim_url}/_sim/requests").json()
    assert len(seen) == 1000 and seen[0]["path"] == "/nowhere/5" and seen[-1]["path"] == "/nowhere/1004"


def test_instance_defaults() -> None:
    with serve(create_app(words=2, split_writes=True, ttfb_ms=100, chunk_delay_ms=10)) as url, httpx.Client() as c:
        start = time.monotonic()
        text = chat(c, url, "toapis", body("toapis", stream=True)).text
        assert time.monotonic() - start >= 0.1
        assert "".join(deltas(text, "content")) == "w0 w1"
        assert len(chunks(text)) == 4
        plain = chat(c, url, "toapis", body("toapis"), {"x-sim-words": "1", "x-sim-ttfb-ms": "0"}).json()
        assert plain["choices"][0]["message"]["content"] == "w0"


def error_500(web: httpx.Client, url: str, provider: str) -> Any:
    """The provider's own error body for 500, as the status knob answers it."""
    response = chat(web, url, provider, body(provider), {"x-sim-status": "500"})
    assert response.status_code == 500
    error_message(provider, response.json())  # the provider's documented shape
    return response.json()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_after_ends_the_stream_with_the_provider_error(sim_url: str, web: httpx.Client, provider: str) -> None:
    expected = error_500(web, sim_url, provider)
    whole = [c["choices"] for c in chunks(chat(web, sim_url, provider, body(provider, stream=True)).text)]
    for k, before in (("0", 0), ("2", 2), ("999", len(whole))):  # K past the end: every chunk, then the error
        received, error = read_stream(web, sim_url, provider, {"x-sim-error-after": k})
        assert error is None, k  # the body ends normally ...
        assert json.loads(received[-1]) == expected, k  # ... after the error event, with no [DONE]
        assert [json.loads(d)["choices"] for d in received[:-1]] == whole[:before], k


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_after_without_streaming_is_an_error_in_200(sim_url: str, web: httpx.Client, provider: str) -> None:
    expected = error_500(web, sim_url, provider)
    for k in ("0", "999"):
        response = chat(web, sim_url, provider, body(provider), {"x-sim-error-after": k})
        assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
        assert response.json() == expected
    control(web, sim_url, error_after=3, count=1)
    assert chat(web, sim_url, provider, body(provider)).json() == expected
    assert "choices" in chat(web, sim_url, provider, body(provider)).json()  # count used up
    both = chat(web, sim_url, provider, body(provider), {"x-sim-error-after": "1", "x-sim-status": "503"})
    assert both.status_code == 503  # status comes first


def error_code(provider: str, payload: dict[str, Any]) -> Any:
    return payload["code"] if provider == "siliconflow" else payload["error"]["code"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_code(sim_url: str, web: httpx.Client, provider: str) -> None:
    zhipu = provider in ("powertokens", "token360")
    plain = chat(web, sim_url, provider, body(provider), {"x-sim-status": "503"}).json()
    coded = chat(web, sim_url, provider, body(provider), {"x-sim-status": "503", "x-sim-error-code": "E42"}).json()
    assert error_code(provider, coded) == "E42"
    where = coded if provider == "siliconflow" else coded["error"]
    where["code"] = error_code(provider, plain)
    assert coded == plain  # only the code changed
    # A JSON integer stays one, except in Zhipu's shape (string codes); a header's value is a string.
    control(web, sim_url, error_code=1113)
    assert error_code(provider, chat(web, sim_url, provider, body(provider), {"x-sim-status": "500"}).json()) == (
        "1113" if zhipu else 1113
    )
    response = chat(web, sim_url, provider, body(provider), {"x-sim-error-after": "1"})
    assert error_code(provider, response.json()) == ("1113" if zhipu else 1113)
    received, _ = read_stream(web, sim_url, provider, {"x-sim-error-after": "1", "x-sim-error-code": "402"})
    assert error_code(provider, json.loads(received[-1])) == "402"
    response = chat(web, sim_url, provider, body(provider), {"x-sim-status": "429"})
    assert response.headers["retry-after"] == "1" and error_code(provider, response.json()) == (
        "1113" if zhipu else 1113
    )
    # Errors no knob asked for keep their own codes.
    for response in (
        web.post(f"{sim_url}/{provider}/v1/chat/completions", json=body(provider)),
        chat(web, sim_url, provider, body(provider, messages=[])),
    ):
        assert response.status_code in (400, 401)
        assert error_code(provider, response.json()) not in (1113, "1113")
        error_message(provider, response.json())


def read_raw(web: httpx.Client, url: str, provider: str, payload: Any, headers: dict[str, str]) -> list[bytes]:
    """The body as the client's reads saw it."""
    with web.stream(
        "POST", f"{url}/{provider}/v1/chat/completions", json=payload, headers={**AUTH, **headers}
    ) as response:
        return [piece for piece in response.iter_raw() if piece]


def test_drip_json(sim_url: str, web: httpx.Client) -> None:
    whole = chat(web, sim_url, "toapis", body("toapis")).json()
    start = time.monotonic()
    reads = read_raw(web, sim_url, "toapis", body("toapis"), {"x-sim-drip-ms": "2"})
    dripped = b"".join(reads)
    assert time.monotonic() - start >= 0.002 * (len(dripped) - 1)
    assert len(reads) >= len(dripped) // 4  # a content-length body: reads may join bytes that arrive together
    assert {**json.loads(dripped), "id": whole["id"], "created": whole["created"]} == whole
    reads = read_raw(web, sim_url, "maxtoken", body("maxtoken"), {"x-sim-drip-ms": "2", "x-sim-status": "500"})
    assert len(reads) >= 10 and json.loads(b"".join(reads)) == error_500(web, sim_url, "maxtoken")


def test_drip_every_sse_write_beats_split_writes(sim_url: str, web: httpx.Client) -> None:
    headers = {"x-sim-keepalive": "1", "x-sim-error-after": "2", "x-sim-split-writes": "1"}
    normal = b"".join(read_raw(web, sim_url, "siliconflow", body("siliconflow", stream=True), headers))
    reads = read_raw(web, sim_url, "siliconflow", body("siliconflow", stream=True), {**headers, "x-sim-drip-ms": "0"})
    # Chunked: a read per write, and every write is one byte (keep-alives and the error event too).
    assert all(len(piece) == 1 for piece in reads)
    text = b"".join(reads).decode()
    assert text.startswith(": keep-alive\n\n") and text.count(": keep-alive") == 3
    assert json.loads(sse_data(text)[-1]) == error_500(web, sim_url, "siliconflow")
    assert [json.loads(d)["choices"] for d in sse_data(text)[:-1]] == [
        json.loads(d)["choices"] for d in sse_data(normal.decode())[:-1]
    ]


def test_drip_2kb_at_1ms_takes_seconds_not_more(sim_url: str, web: httpx.Client) -> None:
    start = time.monotonic()
    reads = read_raw(web, sim_url, "toapis", body("toapis"), {"x-sim-drip-ms": "1", "x-sim-words": "400"})
    elapsed, size = time.monotonic() - start, sum(map(len, reads))
    assert size >= 2000 and 0.001 * (size - 1) <= elapsed < 10
    assert json.loads(b"".join(reads))["choices"][0]["message"]["content"].endswith("w399")


def test_tool_arguments(sim_url: str, web: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]
    control(web, sim_url, tool_arguments={"command": "echo hi"})
    answer = chat(web, sim_url, "toapis", body("toapis", "use Bash", tools=tools)).json()
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "Bash", "arguments": '{"command": "echo hi"}'}
    control(web, sim_url, tool_arguments='{"command": "ls"}')
    answer = chat(web, sim_url, "toapis", body("toapis", "use Bash", tools=tools)).json()
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"command": "ls"}'
    assert web.post(f"{sim_url}/_sim/control", json={"tool_arguments": "[1]"}).status_code == 400


def test_gzip_bomb_inflates_to_its_size_and_stays_the_same_answer(sim_url: str, web: httpx.Client) -> None:
    whole = chat(web, sim_url, "toapis", body("toapis")).json()
    with web.stream("POST", f"{sim_url}/toapis/v1/chat/completions", json=body("toapis"),
                    headers={**AUTH, "x-sim-gzip-bomb": "64"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        sent = b"".join(response.iter_raw())  # raw: not decoded by the client
    assert len(sent) < 100_000  # 64 MiB inflated from well under 100 KB (~1000:1)
    inflated = zlib.decompress(sent, wbits=31)  # the trailer's CRC and size are checked too
    assert len(inflated) > 64 << 20 and inflated[: 64 << 20].strip() == b""
    assert {**json.loads(inflated), "id": whole["id"], "created": whole["created"]} == whole
    with web.stream("POST", f"{sim_url}/siliconflow/v1/chat/completions", json=body("siliconflow", stream=True),
                    headers={**AUTH, "x-sim-gzip-bomb": "0"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        text = zlib.decompress(b"".join(response.iter_raw()), wbits=31).decode()
    assert sse_data(text)[-1] == "[DONE]" and "".join(deltas(text, "content")) == "Echo: hello there"


def test_answer_bytes_pads_a_json_answer_with_whitespace(sim_url: str, web: httpx.Client) -> None:
    whole = chat(web, sim_url, "toapis", body("toapis")).json()
    response = chat(web, sim_url, "toapis", body("toapis"), {"x-sim-answer-bytes": str(3 << 20)})
    assert len(response.content) == 3 << 20 and "content-length" not in response.headers
    assert {**response.json(), "id": whole["id"], "created": whole["created"]} == whole
    assert chat(web, sim_url, "toapis", body("toapis"), {"x-sim-answer-bytes": "-1"}).status_code == 400
