"""stream_options.include_usage with an upstream whose profile says it honours it (`openai`): the
gateway always asks, so the token metrics move, and the client sees the usage chunk only if it asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import start_gateway
from tests.servers import serve
from tests.test_metrics import Delta
from tests.upstreams import UsageHonouring


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, UsageHonouring]]:
    upstream = UsageHonouring()
    with serve(upstream) as url:
        path: Path = tmp_path_factory.mktemp("usage") / "gateway.yaml"
        path.write_text(f"providers:\n  plain:\n    profile: openai\n    base_url: {url}/v1\n    api_key: k\n"
                        "models:\n  glm-plain:\n    - {provider: plain, model: m}\n")
        with start_gateway(path) as gateway:
            yield gateway, upstream


def test_the_gateway_asks_for_usage_and_strips_the_chunk_nobody_asked_for(rig: tuple[str, UsageHonouring]) -> None:
    gateway, upstream = rig
    delta = Delta(gateway)
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="glm-plain", messages=[{"role": "user", "content": "x"}],
                                                     stream=True))
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    assert [c.choices[0].delta.content for c in chunks] == ["a", "b"]  # no usage-only chunk
    assert delta("gateway_tokens_total", model="glm-plain", provider="plain", kind="prompt") == 4
    assert delta("gateway_tokens_total", model="glm-plain", provider="plain", kind="completion") == 2


def test_a_client_that_asks_gets_the_usage_chunk_once(rig: tuple[str, UsageHonouring]) -> None:
    gateway, upstream = rig
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="glm-plain", messages=[{"role": "user", "content": "x"}],
                                                     stream=True, stream_options={"include_usage": True}))
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    assert [c.usage.total_tokens for c in chunks if c.usage] == [6]
    assert chunks[-1].choices == []


def test_stream_options_never_go_with_a_json_request(rig: tuple[str, UsageHonouring]) -> None:
    gateway, upstream = rig
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as client:
        answer = client.chat.completions.create(model="glm-plain", messages=[{"role": "user", "content": "x"}],
                                                stream_options={"include_usage": True})
    assert answer.choices[0].message.content == "hm"
    assert upstream.bodies[-1]["stream"] is False and "stream_options" not in upstream.bodies[-1]
