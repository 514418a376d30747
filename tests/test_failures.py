"""When things go wrong: upstream errors in the OpenAI envelope, mid-stream failures as an error
event (never a hang), failover, client disconnects, oversized bodies and events, redirects."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import (
    CLIENT_KEY,
    PROVIDERS,
    UPSTREAM_KEYS,
    Simulator,
    config_text,
    start_gateway,
)
from tests.servers import free_port, serve
from tests.upstreams import (
    HugeEvent,
    Inventive,
    Lingering,
    Redirecting,
    Scripted,
    SlowJson,
    SlowStream,
)

SSE, JSON = b"text/event-stream", b"application/json"
CHUNK = b'data: {"id":"o","object":"chat.completion.chunk","created":1,"model":"m","choices":[%s]}\n\n'
HI = CHUNK % b'{"index":0,"delta":{"content":"hi"},"finish_reason":null}'
STOP = CHUNK % b'{"index":0,"delta":{},"finish_reason":"stop"}'
THERE = CHUNK % b'{"index":0,"delta":{"content":" there"},"finish_reason":null}'
SCRIPTS = {  # upstream model -> (status, content type, body)
    "odd-chunks": (200, SSE, HI + CHUNK % b"null" + CHUNK % b'{"index":0,"delta":"oops"}'
                   + b'data: {"choices":[],"usage":"lots"}\n\n' + STOP + b"data: [DONE]\n\n"),
    "odd-usage": (200, JSON, b'{"id":"o","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,'
                             b'"prompt_tokens_details":"n/a","completion_tokens":true}}'),
    "error-event": (200, SSE, HI + b'data: {"error":{"message":"quota for key ' + Scripted.KEY.encode()
                    + b' exhausted","code":"req-7f3a9c-unique"}}\n\n'),
    "no-done": (200, SSE, HI + STOP),
    "done-one-newline": (200, SSE, HI + STOP + b"data: [DONE]\n"),
    "cut-short": (200, SSE, HI),
    # once the stream has started, what arrives in one read with a broken event still goes out first
    "broken-after-deltas": (200, SSE, (HI, THERE + b": keep-alive\n\n" + b"data: \xff\xfe{\"choices\n\n" + STOP)),
    "huge-after-deltas": (200, SSE, (HI, THERE + b": keep-alive\n\ndata: " + b"x" * (1024 * 1024 + 1) + b"\n\n")),
    "not-found": (404, b"text/html", b"<html>Not Found</html>"),
}

USER = {"role": "user", "content": "hi"}


class Rig:
    def __init__(self, url: str, config: Path, redirect: Redirecting, slow: SlowStream, thinker: SlowJson,
                 lingering: Lingering) -> None:
        self.url, self.config, self.redirect, self.slow = url, config, redirect, slow
        self.thinker, self.lingering = thinker, lingering


@pytest.fixture(scope="module")
def rig(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    redirect, slow, thinker, lingering = Redirecting(), SlowStream(), SlowJson(), Lingering()
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve(app)) for name, app in
                {"redirect": redirect, "huge": HugeEvent(1024 * 1024 + 10), "slow": slow,
                 "inventive": Inventive(), "thinker": thinker, "lingering": lingering,
                 "scripted": Scripted(SCRIPTS)}.items()}
        extra = (
            f"  unchecked:\n    profile: openai\n    base_url: {sim.url}/powertokens/v1\n"
            f"    api_key: {UPSTREAM_KEYS['powertokens']}\n"
            f"  down:\n    profile: openai\n    base_url: http://127.0.0.1:{free_port()}/v1\n    api_key: k\n"
            f"  impatient:\n    profile: toapis\n    base_url: {sim.url}/toapis/v1\n"
            f"    api_key: {UPSTREAM_KEYS['toapis']}\n"
            f"    timeout: {{first_byte: 0.5, read: 0.5}}\n    retry: {{attempts: 1}}\n"
            + "".join(f"  {name}:\n    profile: openai\n    base_url: {url}/v1\n    api_key: {Scripted.KEY}\n"
                      for name, url in urls.items()))
        models = (
            "  glm-unchecked:\n    - {provider: unchecked, model: glm-4.7-flash}\n"
            "  glm-down:\n    - {provider: down, model: m}\n"
            "  glm-impatient:\n    - {provider: impatient, model: glm-5}\n"
            "  glm-failover:\n    - {provider: down, model: m}\n    - {provider: toapis, model: glm-5}\n"
            + "".join(f"  glm-{name}:\n    - {{provider: {name}, model: m}}\n" for name in urls)
            + "".join(f"  glm-{model}:\n    - {{provider: scripted, model: {model}}}\n" for model in SCRIPTS)
            + "  glm-not-found-then-toapis:\n    - {provider: scripted, model: not-found}\n"
            "    - {provider: toapis, model: glm-5}\n")
        path = tmp_path_factory.mktemp("rig") / "gateway.yaml"
        path.write_text(config_text(sim.url, extra, models))
        url = stack.enter_context(start_gateway(path, api_keys=CLIENT_KEY, max_body_bytes=4096))
        yield Rig(url, path, redirect, slow, thinker, lingering)


@pytest.fixture
def http(rig: Rig) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rig.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as c:
        yield c


def chat(http: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": [USER], **extra})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [500, 503, 401, 403])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_failures_are_bad_gateway(http: httpx.Client, sim: Simulator, provider: str, status: int,
                                           stream: bool) -> None:
    sim.control(provider=provider, status=status)  # every try fails
    response = chat(http, f"glm-{provider}", stream=stream)  # before a stream starts: a plain HTTP error
    assert response.status_code == 502
    error = response.json()["error"]
    quota = provider == "maxtoken" and status == 403  # maxtoken.txt:162: 403 is also "insufficient balance"
    assert error["code"] == ("quota_exhausted" if quota else "upstream_error") and error["message"].startswith(provider)
    assert response.headers["x-gateway-provider"] == provider
    tries = 3 if status >= 500 else 1  # a 5xx is retried (retry.attempts: 3); our key refused is not
    assert response.headers["x-gateway-attempts"] == str(tries) and len(sim.requests(provider)) == tries


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limits_keep_retry_after(client_for_rig: openai.OpenAI, sim: Simulator, provider: str,
                                      stream: bool) -> None:
    sim.control(provider=provider, status=429, retry_after=7, count=1)
    with pytest.raises(openai.RateLimitError) as info:
        client_for_rig.chat.completions.create(model=f"glm-{provider}", messages=[USER], stream=stream)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["code"] == "rate_limited"


@pytest.fixture
def client_for_rig(rig: Rig) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{rig.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
        yield c


def test_content_policy_is_a_400_content_filter(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": "glm-maxtoken",
                                                        "messages": [{"role": "user", "content": "[unsafe] x"}]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_filter"


def test_an_upstream_validation_error_is_a_400_prefixed_with_the_provider(http: httpx.Client) -> None:
    # the "openai" profile has no limits: the simulator, as the witness, rejects it
    response = chat(http, "glm-unchecked", temperature=1.5)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "upstream_rejected" and error["message"].startswith("unchecked: ")
    assert "temperature" in error["message"]


def test_connect_failure_is_502_and_a_timeout_504(http: httpx.Client, sim: Simulator) -> None:
    response = chat(http, "glm-down")
    assert response.status_code == 502 and "could not be reached" in response.json()["error"]["message"]
    sim.control(ttfb_ms=1500, count=1)
    started = time.monotonic()
    response = chat(http, "glm-impatient")
    assert response.status_code == 504 and time.monotonic() - started < 1.4
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_a_failed_route_hands_over_to_the_next(http: httpx.Client, sim: Simulator) -> None:
    response = chat(http, "glm-failover")
    assert response.status_code == 200 and response.headers["x-gateway-provider"] == "toapis"
    sim.control(provider="toapis", status=500)
    response = chat(http, "glm-failover")
    assert response.status_code == 502  # both failed, three tries each: the last failure is reported
    assert response.headers["x-gateway-attempts"] == "6"
    # "down" may be ejected by earlier tests on this gateway, and then is tried last
    assert response.headers["x-gateway-provider"] in ("down", "toapis")


def events_of(http: httpx.Client, model: str, **extra: object) -> list[bytes]:
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": model, "messages": [USER], "stream": True, **extra}) as response:
        assert response.status_code == 200
        return [e for e in response.read().split(b"\n\n") if e]


@pytest.mark.parametrize("knob, words", [({"reset_after": 3}, "broke off"), ({"malformed_after": 2}, "not JSON"),
                                         ({"stall_after": 2}, "idle timeout")])
def test_a_stream_that_fails_midway_ends_with_an_error_event(http: httpx.Client, sim: Simulator, knob: dict,
                                                             words: str) -> None:
    sim.control(**knob, chunk_delay_ms=20, count=1)  # the first events go out before the failure
    started = time.monotonic()
    events = events_of(http, "glm-impatient")
    assert time.monotonic() - started < 5
    last = orjson.loads(events[-1].removeprefix(b"data: "))
    assert words in last["error"]["message"] and last["error"]["message"].startswith("impatient")
    assert b"data: [DONE]" not in events


@pytest.mark.parametrize("knob, words", [({"reset_after": 2}, "broke off"), ({"malformed_after": 1}, "not JSON")])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_provider_failing_midway_ends_with_an_error_event(http: httpx.Client, sim: Simulator, provider: str,
                                                                knob: dict, words: str) -> None:
    sim.control(provider=provider, **knob, chunk_delay_ms=20, count=1)
    events = events_of(http, f"glm-{provider}")
    assert words in orjson.loads(events[-1].removeprefix(b"data: "))["error"]["message"]


def test_the_sdk_raises_on_a_mid_stream_error(client_for_rig: openai.OpenAI, sim: Simulator) -> None:
    sim.control(reset_after=2, count=1)
    stream = client_for_rig.chat.completions.create(model="glm-toapis", messages=[USER], stream=True)
    with pytest.raises(openai.APIError, match="broke off"):
        list(stream)


def test_an_oversized_event_ends_the_stream_with_an_error(http: httpx.Client) -> None:
    events = events_of(http, "glm-huge")
    assert events[0].startswith(b'data: {"choices"')
    assert b"larger than 1048576 bytes" in events[-1]


@pytest.mark.parametrize("model, words", [("broken-after-deltas", b"not JSON"), ("huge-after-deltas", b"larger than")])
def test_events_in_the_same_read_as_a_broken_one_reach_the_client_first(http: httpx.Client, model: str,
                                                                        words: bytes) -> None:
    *events, error = events_of(http, f"glm-{model}")
    assert events == [HI.strip(), THERE.strip(), b": keep-alive"]
    assert error.startswith(b'data: {"error"') and words in error


def test_values_an_upstream_invents_come_back_unchanged(http: httpx.Client) -> None:
    response = chat(http, "glm-inventive")
    assert response.content == Inventive.JSON
    assert response.headers["x-ratelimit-remaining-requests"] == "41" and response.headers["retry-after"] == "3"
    assert "x-internal-secret" not in response.headers
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "glm-inventive", "messages": [USER], "stream": True}) as streamed:
        assert streamed.read() == Inventive.SSE


def test_upstream_connections_are_reused_across_streams(http: httpx.Client, rig: Rig) -> None:
    for _ in range(3):
        events = events_of(http, "glm-lingering")
        assert events[-1] == b"data: [DONE]"
        time.sleep(0.1)  # the gateway reads the end of the body after the client has its answer
    assert len(set(rig.lingering.clients)) == 1, rig.lingering.clients


def test_odd_upstream_chunks_are_relayed_not_crashed_on(http: httpx.Client) -> None:
    events = events_of(http, "glm-odd-chunks")
    assert events == SCRIPTS["odd-chunks"][2].strip().split(b"\n\n")
    response = chat(http, "glm-odd-usage")
    assert response.status_code == 200 and response.content == SCRIPTS["odd-usage"][2]


def test_an_error_event_in_a_200_is_redacted_and_its_code_is_not_a_label(http: httpx.Client, rig: Rig) -> None:
    # the error arrives in the same read as the first delta: nothing was sent yet, so it is a failed
    # attempt (issue 10) answered with an HTTP error, not an error event
    response = chat(http, "glm-error-event", stream=True)
    assert response.status_code == 502
    last = response.json()["error"]
    assert last["message"] == "scripted: quota for key *** exhausted (code req-7f3a9c-unique)"
    assert last["code"] == "upstream_error"
    assert "req-7f3a9c" not in httpx.get(f"{rig.url}/metrics").text


@pytest.mark.parametrize("model", ["no-done", "done-one-newline"])
def test_a_complete_answer_ends_with_done_even_if_the_upstream_forgot(client_for_rig: openai.OpenAI,
                                                                     http: httpx.Client, model: str) -> None:
    assert events_of(http, f"glm-{model}")[-1] == b"data: [DONE]"
    chunks = list(client_for_rig.chat.completions.create(model=f"glm-{model}", messages=[USER], stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["hi", None]


def test_an_answer_cut_short_ends_with_an_error_event(http: httpx.Client) -> None:
    assert b"ended the stream before its answer was complete" in events_of(http, "glm-cut-short")[-1]


def test_an_upstream_404_is_the_gateways_problem_and_the_next_route_answers(http: httpx.Client) -> None:
    response = chat(http, "glm-not-found")
    assert response.status_code == 502 and response.json()["error"]["message"].startswith("scripted")
    response = chat(http, "glm-not-found-then-toapis")
    assert response.status_code == 200 and response.headers["x-gateway-provider"] == "toapis"


def test_redirects_are_not_followed(http: httpx.Client, rig: Rig) -> None:
    response = chat(http, "glm-redirect")
    assert response.status_code == 502 and "redirects are not followed" in response.json()["error"]["message"]
    assert rig.redirect.hits == 1


def test_a_client_that_leaves_cancels_the_upstream_request(rig: Rig) -> None:
    with httpx.Client(base_url=rig.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as http:
        with http.stream("POST", "/v1/chat/completions",
                         json={"model": "glm-slow", "messages": [USER], "stream": True}) as response:
            next(response.iter_raw())
    assert rig.slow.gone.wait(2), "the upstream never saw the gateway hang up"
    assert rig.slow.events_sent < 20


def test_a_client_that_leaves_a_json_request_cancels_it_too(rig: Rig) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{rig.url}/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "glm-thinker", "messages": [USER]}, timeout=0.5)
    assert rig.thinker.gone.wait(2), "the upstream never saw the gateway hang up"


def test_bodies_over_the_limit_are_413_announced_or_chunked(http: httpx.Client, sim: Simulator) -> None:
    big = {"model": "glm-toapis", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert http.post("/v1/chat/completions", json=big).status_code == 413
    chunked = http.post("/v1/chat/completions", content=iter([orjson.dumps(big)[:3000], orjson.dumps(big)[3000:]]))
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"
    assert sim.requests() == []


def test_a_raw_socket_client_that_dies_mid_body_leaves_nothing_hanging(rig: Rig, sim: Simulator) -> None:
    host, port = rig.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n"
                     b"authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n\r\n{\"model\"")
    assert chat(httpx.Client(base_url=rig.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}),
                "glm-toapis").status_code == 200


def test_no_key_or_traceback_in_responses_or_logs(rig: Rig, sim: Simulator,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    with start_gateway(rig.config, api_keys=CLIENT_KEY, log_level="info") as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as http:
        bodies = [chat(http, m).text for m in ("glm-down", "glm-redirect", "glm-unchecked", "glm-error-event",
                                               "glm-odd-chunks", "glm-odd-usage")]
        sim.control(status=401, count=1)
        bodies.append(chat(http, "glm-token360").text)
        bodies.append(http.post("/v1/chat/completions", content=b"{oops").text)
        time.sleep(0.3)  # request lines are flushed within 200 ms
    logged = capfd.readouterr()
    assert '"event":"request"' in logged.out
    seen = "\n".join(bodies) + logged.out + logged.err
    for secret in (*UPSTREAM_KEYS.values(), CLIENT_KEY, Scripted.KEY):
        assert secret not in seen
    assert "Traceback" not in seen
