"""Virtual keys through the real gateway and the simulators (issue 14): who may use which model,
limits and budgets answered as OpenAI answers them, usage and cost counted per key, hot reload.
(The counting rules themselves are tests/test_state.py's, over every store.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.config import ConfigError, load
from gateway.keys import Key, Keys
from gateway.prices import Price
from tests.conftest import Simulator, config_text, start_gateway
from tests.servers import serve
from tests.test_metrics import Delta
from tests.test_operate import ROOT, gateway_process, wait_until

USER = {"role": "user", "content": "Hello there"}
ENV_KEY = "sk-env-unlimited"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEYS = f"""keys:
  reader:
    key_sha256: {sha("sk-reader")}
    models: [glm-toapis, "glm-s*"]
  paced:
    key: ${{PACED_KEY:-sk-paced}}
    limits: {{requests_per_minute: 3}}
  tokens:
    key: sk-tokens
    limits: {{tokens_per_minute: 40}}
  capped:
    key: sk-capped
    budget: {{tokens_per_day: 20}}
  dollars:
    key: sk-dollars
    budget: {{usd_per_month: 0.000001}}
  narrow:
    key: sk-narrow
    limits: {{max_concurrent: 1}}
prices:
  toapis/glm-5: {{prompt: 1.0, completion: 2.0}}
"""


def write_config(path: Path, sim: Simulator, keys: str = KEYS) -> Path:
    path.write_text(config_text(sim.url) + keys)
    return path


@pytest.fixture
def keyed(sim: Simulator, tmp_path: Path) -> Iterator[str]:
    with start_gateway(write_config(tmp_path / "gateway.yaml", sim), api_keys=ENV_KEY) as url:
        yield url


def chat(url: str, key: str, model: str = "glm-toapis", **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [USER], **extra}, timeout=20)


def test_a_key_may_use_only_its_models_and_sees_only_them(keyed: str) -> None:
    with openai.OpenAI(base_url=f"{keyed}/v1", api_key="sk-reader", max_retries=0) as client:
        assert client.chat.completions.create(model="glm-toapis", messages=[USER]).choices[0].message.content
        assert client.chat.completions.create(model="glm-siliconflow", messages=[USER])  # by the pattern glm-s*
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="glm-maxtoken", messages=[USER])
        assert refused.value.status_code == 403
        assert refused.value.body["code"] == "model_not_allowed" and refused.value.body["param"] == "model"
        assert "reader" in refused.value.message and "glm-maxtoken" in refused.value.message
        listed = {m.id for m in client.models.list()}
    assert listed == {"glm-toapis", "glm-siliconflow", "glm-sf-qwq", "glm-strict"}
    assert chat(keyed, "sk-unknown").status_code == 401
    assert chat(keyed, ENV_KEY, model="glm-maxtoken").status_code == 200  # GATEWAY_API_KEYS: every model


def test_requests_per_minute_answers_429_with_openai_headers(keyed: str) -> None:
    answers = [chat(keyed, "sk-paced") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[3]
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "3 requests per minute" in error["message"] and "paced" in error["message"]
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    assert "x-ratelimit-limit-tokens" not in refused.headers  # no token limit on this key
    unlimited = chat(keyed, ENV_KEY)
    assert unlimited.status_code == 200 and "x-ratelimit-limit-requests" not in unlimited.headers


def test_a_request_no_route_can_take_counts_nothing(keyed: str) -> None:
    """Its admission is asked before the routes' limits are checked (Redis answers meanwhile), and
    undone when none can take it."""
    for _ in range(4):
        rejected = chat(keyed, "sk-paced", model="glm-strict", temperature=1.5)
        assert rejected.status_code == 400 and rejected.json()["error"]["param"] == "temperature"
    answers = [chat(keyed, "sk-paced") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]


def test_the_openai_sdk_sees_a_rate_limit_error(keyed: str) -> None:
    with openai.OpenAI(base_url=f"{keyed}/v1", api_key="sk-paced", max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(model="glm-toapis", messages=[USER])
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="glm-toapis", messages=[USER])
    assert refused.value.body["code"] == "rate_limit_exceeded"


def test_tokens_are_settled_on_the_usage_streams_included(keyed: str, sim: Simulator) -> None:
    # 40 tokens a minute; the simulator's answer here costs 2 prompt + 3 completion words = 5
    first = chat(keyed, "sk-tokens", max_tokens=30)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert first.headers["x-ratelimit-remaining-tokens"] == "10"  # admitted on its max_tokens
    with httpx.stream("POST", f"{keyed}/v1/chat/completions", headers={"Authorization": "Bearer sk-tokens"},
                      json={"model": "glm-toapis", "messages": [USER], "max_tokens": 10, "stream": True},
                      timeout=20) as streamed:
        assert streamed.headers["x-ratelimit-remaining-tokens"] == str(40 - used - 10)
        body = b"".join(streamed.iter_raw())
    assert b"[DONE]" in body
    # both settled on their real usage, the stream's from its usage chunk: 40 - 2 * used remain
    after = chat(keyed, "sk-tokens", max_tokens=1)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(40 - 2 * used - 1)
    assert after.headers["x-ratelimit-limit-tokens"] == "40"
    refused = chat(keyed, "sk-tokens", max_tokens=39)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"


def test_a_token_budget_says_its_period_and_when_it_resets(keyed: str) -> None:
    answers = [chat(keyed, "sk-capped", max_tokens=1) for _ in range(8)]
    # 3 tokens each (2 prompt, 1 completion): admitted while under 20, so the 7th passes it by 1
    assert {a.json()["usage"]["total_tokens"] for a in answers[:7]} == {3}
    assert [a.status_code for a in answers] == [200] * 7 + [429]
    answer = answers[-1]
    error = answer.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86400))
    assert "20 tokens per day" in error["message"] and tomorrow in error["message"]
    assert 0 < int(answer.headers["retry-after"]) <= 86400


def test_cost_is_priced_per_route_and_an_unpriced_route_is_counted(keyed: str) -> None:
    delta = Delta(keyed)
    answer = chat(keyed, "sk-dollars")  # toapis/glm-5 is priced; the budget is a millionth of a dollar
    usage = answer.json()["usage"]
    assert answer.status_code == 200
    assert chat(keyed, "sk-dollars").json()["error"]["code"] == "budget_exceeded"
    assert chat(keyed, ENV_KEY, model="glm-maxtoken").status_code == 200  # no price for maxtoken's route
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert delta("gateway_cost_usd_total", key="dollars", model="glm-toapis", provider="toapis") == pytest.approx(
        expected)
    assert delta("gateway_unpriced_requests_total", model="glm-maxtoken", provider="maxtoken") == 1
    assert delta("gateway_key_requests_total", key="dollars", model="glm-toapis", status="429") == 1
    assert delta("gateway_key_rejections_total", key="dollars", reason="budget") == 1
    assert delta("gateway_key_requests_total", key="env", model="glm-maxtoken", status="200") == 1


def test_max_concurrent_counts_requests_still_running(keyed: str, sim: Simulator) -> None:
    sim.control(provider="toapis", chunk_delay_ms=100, words=20)
    with httpx.stream("POST", f"{keyed}/v1/chat/completions", headers={"Authorization": "Bearer sk-narrow"},
                      json={"model": "glm-toapis", "messages": [USER], "stream": True}, timeout=20) as running:
        chunks = running.iter_raw()
        next(chunks)
        second = chat(keyed, "sk-narrow")
        assert second.status_code == 429 and "1 requests at once" in second.json()["error"]["message"]
        for _ in chunks:
            pass
    assert chat(keyed, "sk-narrow").status_code == 200  # the stream's lease ended with it


def test_the_messages_door_answers_in_anthropics_shape(keyed: str) -> None:
    with anthropic.Anthropic(base_url=keyed, api_key="sk-paced", max_retries=0) as client:
        for _ in range(3):
            client.messages.create(model="glm-toapis", max_tokens=16, messages=[USER])
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(model="glm-toapis", max_tokens=16, messages=[USER])
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    with anthropic.Anthropic(base_url=keyed, api_key="sk-reader", max_retries=0) as client:
        with pytest.raises(anthropic.PermissionDeniedError):
            client.messages.create(model="glm-maxtoken", max_tokens=16, messages=[USER])


def _upstream_saying_limits(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """An upstream that answers ``status`` with its own rate-limit ``headers``."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": body})
    return app


_limited_upstream = _upstream_saying_limits(
    200, [(b"x-ratelimit-limit-requests", b"1000"), (b"x-ratelimit-remaining-requests", b"999")], orjson.dumps(
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
_rate_limited_upstream = _upstream_saying_limits(  # a 429, its header names in another case
    429, [(b"X-RateLimit-Limit-Requests", b"1000"), (b"x-ratelimit-remaining-requests", b"0")],
    b'{"error": {"message": "slow down"}}')


def _paced_and_free(tmp_path: Path, upstream: str, provider: str = "", keys: str = "") -> Path:
    """One provider at ``upstream`` (``provider``: more of its lines) for model m, a key with limits
    (paced), one without (free), and ``keys``."""
    path = tmp_path / "gateway.yaml"
    path.write_text(f"providers:\n  own:\n    profile: openai\n    base_url: {upstream}/v1\n    api_key: k\n{provider}"
                    "models:\n  m:\n    - {provider: own, model: m}\n"
                    "keys:\n  paced:\n    key: sk-paced\n    limits: {requests_per_minute: 10}\n"
                    f"  free:\n    key: sk-free\n{keys}")
    return path


def test_an_upstream_refusal_renames_its_ratelimit_headers_for_a_limited_key(tmp_path: Path) -> None:
    with serve(_rate_limited_upstream) as upstream:
        with start_gateway(_paced_and_free(tmp_path, upstream, provider="    retry: {attempts: 1}\n")) as url:
            limited, free = chat(url, "sk-paced", model="m"), chat(url, "sk-free", model="m")
    assert limited.status_code == free.status_code == 429
    assert limited.headers["x-upstream-ratelimit-limit-requests"] == "1000"
    assert limited.headers["x-upstream-ratelimit-remaining-requests"] == "0"
    assert free.headers["x-ratelimit-limit-requests"] == "1000"
    assert "x-upstream-ratelimit-limit-requests" not in free.headers


def test_upstream_ratelimit_headers_are_renamed_for_a_limited_key(tmp_path: Path) -> None:
    with serve(_limited_upstream) as upstream:
        keys = "  budgeted:\n    key: sk-budgeted\n    budget: {tokens_per_day: 1000000}\n"
        with start_gateway(_paced_and_free(tmp_path, upstream, keys=keys)) as url:
            limited, free = chat(url, "sk-paced", model="m"), chat(url, "sk-free", model="m")
            budgeted = chat(url, "sk-budgeted", model="m")
    assert limited.headers["x-ratelimit-limit-requests"] == "10"  # the gateway's, for its key
    assert limited.headers["x-upstream-ratelimit-limit-requests"] == "1000"
    assert limited.headers["x-upstream-ratelimit-remaining-requests"] == "999"
    assert free.headers["x-ratelimit-limit-requests"] == "1000"  # a key without limits: the upstream's, as before
    assert "x-upstream-ratelimit-limit-requests" not in free.headers
    # a budget says nothing of pace: the upstream's own headers, as they came
    assert budgeted.headers["x-ratelimit-limit-requests"] == "1000"


def test_a_reload_applies_a_new_limit_to_the_next_request(sim: Simulator, tmp_path: Path) -> None:
    path = write_config(tmp_path / "gateway.yaml", sim)
    with gateway_process(path, GATEWAY_API_KEYS=ENV_KEY, GATEWAY_ADMIN_KEY="sk-admin") as served:
        assert [chat(served.url, "sk-paced").status_code for _ in range(4)] == [200, 200, 200, 429]
        write_config(path, sim, KEYS.replace("requests_per_minute: 3", "requests_per_minute: 5"))
        reloaded = httpx.post(f"{served.url}/admin/reload", headers={"Authorization": "Bearer sk-admin"})
        assert reloaded.status_code == 200, reloaded.text
        assert [chat(served.url, "sk-paced").status_code for _ in range(3)] == [200, 200, 429]
        wait_until(lambda: len(served.logged("request")) >= 7, what="the request lines", log=served.lines)
        lines = served.logged("request")
        assert {line["key"] for line in lines} == {"paced"}
        assert all(line["cost_usd"] > 0 for line in lines if line["status"] == 200)
        assert all(line["cost_usd"] == 0 for line in lines if line["status"] == 429)
        output = "".join(served.lines)
        assert "sk-paced" not in output and sha("sk-paced") not in output


def test_key_new_prints_a_key_once_and_yaml_that_configures_it(sim: Simulator, tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "gateway", "key", "new", "batch-app"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    plain = next(line.split("# ", 1)[1] for line in made.splitlines() if line.startswith("# sk-"))
    assert plain.startswith("sk-glmgw-") and len(plain) > 40
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url) + "\n".join(line for line in made.splitlines() if not line.startswith("#")))
    with start_gateway(path) as url:
        assert chat(url, plain).status_code == 200
        assert chat(url, plain[:-1]).status_code == 401
    bad = subprocess.run([sys.executable, "-m", "gateway", "key", "new", "env"], cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "env" in bad.stderr


def test_a_stored_response_belongs_to_the_key_that_created_it(keyed: str) -> None:
    with openai.OpenAI(base_url=f"{keyed}/v1", api_key="sk-reader", max_retries=0) as owner, \
            openai.OpenAI(base_url=f"{keyed}/v1", api_key=ENV_KEY, max_retries=0) as other:
        first = owner.responses.create(model="glm-toapis", input="Hello there")
        assert owner.responses.retrieve(first.id).id == first.id
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as unknown:
            other.responses.create(model="glm-toapis", input="more", previous_response_id=first.id)
        assert unknown.value.body["param"] == "previous_response_id"
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(first.id)
        assert owner.responses.create(model="glm-toapis", input="more", previous_response_id=first.id).output_text
        owner.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            owner.responses.retrieve(first.id)


@pytest.mark.parametrize(("section", "problem"), [
    ("keys:\n  a:\n    key_sha256: abc\n", "keys.a.key_sha256: expected 64 hex digits"),
    ("keys:\n  a:\n    key: k1\n    key_sha256: " + "0" * 64 + "\n", "keys.a: needs one of"),
    ("keys:\n  a:\n    key: k1\n  b:\n    key: k1\n", "keys.b: the same key as keys.a"),
    ("keys:\n  env:\n    key: k1\n", "keys.env: a key's name is a metric label"),
    ("keys:\n  a:\n    key: k1\n    models: [glm-nope]\n", "keys.a.models[0]: 'glm-nope' is no configured alias"),
    ("keys:\n  a:\n    key: k1\n    limits: {requests_per_minute: 0}\n", "keys.a.limits.requests_per_minute"),
    ("keys:\n  a:\n    key: k1\n    budget: {usd_per_year: 5}\n", "keys.a.budget.usd_per_year: unknown"),
    ("keys:\n  a:\n    key: ${UNSET_APP_KEY}\n", "environment variable UNSET_APP_KEY is not set"),
    ("prices:\n  nobody/m: {prompt: 1, completion: 1}\n", "prices.nobody/m: unknown provider 'nobody'"),
    ("prices:\n  toapis/glm-5: {prompt: 1}\n", "prices.toapis/glm-5.completion: required"),
    ("prices:\n  toapis/glm-5: {prompt: -1, completion: 1}\n", "prices.toapis/glm-5.prompt: expected USD"),
])
def test_a_bad_key_or_price_is_a_config_error_naming_it(sim: Simulator, tmp_path: Path, section: str,
                                                        problem: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url) + section)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert problem in str(error.value)
    assert "k1" not in str(error.value).replace("keys.a", "")


def test_a_price_no_route_uses_is_a_warning(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url) + "prices:\n  toapis/glm-9: {prompt: 1, completion: 1}\n")
    assert "prices.toapis/glm-9: no alias routes to it, so it is never used" in load(path).warnings()


def test_cached_prompt_tokens_cost_their_own_price() -> None:
    price = Price(prompt=1.0, completion=4.0, cached_prompt=0.25)
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
             "prompt_tokens_details": {"cached_tokens": 800}}
    assert price.cost(usage) == pytest.approx((200 * 1.0 + 800 * 0.25 + 100 * 4.0) / 1e6)
    assert price.cost({"prompt_tokens": "x", "completion_tokens": None}) == 0


def test_a_keys_patterns_are_matched_against_the_alias_that_routes() -> None:
    narrow = Key("k", models=("glm-4*", "claude-*", "glm-5.1"))
    assert narrow.allows("glm-4.7", "glm-4.7")
    assert not narrow.allows("glm-*", "glm-4-x")  # a catch-all alias to another model: not through glm-4*
    assert narrow.allows("claude-*", "claude-sonnet-4-5")  # the pattern alias itself is listed
    assert narrow.allows("glm-*", "glm-5.1")  # a name the key lists, whatever alias it routes by


def test_each_of_gateway_api_keys_owns_its_own_stored_responses() -> None:
    keys = Keys({}, ["sk-one", "sk-two"])
    one, two = keys.find("sk-one"), keys.find("sk-two")
    assert one is not None and two is not None and one.name == two.name == "env"
    assert one.owner != two.owner and "sk-one" not in one.owner


def test_leaving_before_the_usage_counts_the_estimate(keyed: str, sim: Simulator) -> None:
    sim.control(provider="toapis", chunk_delay_ms=100, words=20)
    with httpx.stream("POST", f"{keyed}/v1/chat/completions", headers={"Authorization": "Bearer sk-tokens"},
                      json={"model": "glm-toapis", "messages": [USER], "max_tokens": 30, "stream": True},
                      timeout=20) as streamed:
        next(streamed.iter_raw())  # then gone, before the usage chunk
    sim.reset()
    time.sleep(0.5)
    after = chat(keyed, "sk-tokens", max_tokens=1)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(40 - 30 - 1)  # not 40 - 1: not free
