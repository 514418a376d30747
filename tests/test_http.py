"""The HTTP surface: models, probes, auth, unknown and disabled aliases."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, PROVIDERS, Simulator, start_gateway


def test_models_list_the_aliases_in_openais_format(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:5] == [f"glm-{p}" for p in PROVIDERS]
    assert client.models.retrieve("glm-toapis").id == "glm-toapis"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-nope")
    assert info.value.body["code"] == "model_not_found"


def test_an_unknown_alias_is_404_model_not_found(client: openai.OpenAI, sim: Simulator) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    assert sim.requests() == []


def test_probes_answer_without_a_key(gateway: str) -> None:
    assert httpx.get(f"{gateway}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"},
                                     {"Authorization": f"Basic {CLIENT_KEY}"}])
def test_v1_needs_a_client_key(gateway: str, sim: Simulator, headers: dict) -> None:
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        response = httpx.request(method, f"{gateway}{path}", headers=headers,
                                 json={"model": "glm-toapis", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert sim.requests() == []


def test_the_sdk_without_a_key_gets_an_authentication_error(gateway: str) -> None:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_unknown_paths_are_404_in_the_envelope(http: httpx.Client) -> None:
    response = http.get("/v1/embeddings")
    assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"
    assert http.get("/v1/chat/completions").status_code == 405


def test_an_alias_without_enabled_providers_is_503_naming_the_variable(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_UNSET_KEY", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text("providers:\n  sf:\n    profile: siliconflow\n    base_url: http://127.0.0.1:9/v1\n"
                    "    api_key: ${TEST_UNSET_KEY}\nmodels:\n  glm:\n    - {provider: sf, model: m}\n")
    with start_gateway(path) as url:  # loopback, no client keys: open
        response = httpx.post(f"{url}/v1/chat/completions",
                              json={"model": "glm", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 503
        assert "set TEST_UNSET_KEY" in response.json()["error"]["message"]
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "glm"


def test_an_alias_may_be_a_glob_exact_names_first_then_patterns_in_file_order(tmp_path: Path,
                                                                              sim: Simulator) -> None:
    from tests.conftest import UPSTREAM_KEYS
    from tests.test_metrics import Delta, scrape

    path = tmp_path / "gateway.yaml"
    providers = "".join(f"  {p}:\n    base_url: {sim.url}/{p}/v1\n    api_key: {UPSTREAM_KEYS[p]}\n"
                        for p in ("toapis", "token360", "maxtoken"))
    path.write_text(f"providers:\n{providers}models:\n"
                    "  claude-haiku-fast:\n    - {provider: maxtoken, model: glm-5-turbo}\n"
                    "  claude-haiku-*:\n    - {provider: token360, model: glm-5.1}\n"
                    "  claude-*:\n    - {provider: toapis, model: glm-5}\n")
    with start_gateway(path) as url:
        delta = Delta(url)  # the metrics are the process's: other tests' gateways count claude-* too

        def provider_for(model: str) -> str:
            response = httpx.post(f"{url}/v1/chat/completions",
                                  json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 200, response.text
            return response.headers["x-gateway-provider"]

        assert provider_for("claude-haiku-fast") == "maxtoken"
        assert provider_for("claude-haiku-4-5") == "token360"
        assert provider_for("claude-sonnet-4-5") == "toapis"
        assert provider_for("claude-haiku-fast-2") == "token360"
        unknown = httpx.post(f"{url}/v1/chat/completions",
                             json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert unknown.status_code == 404
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == [
            "claude-haiku-fast", "claude-haiku-*", "claude-*"]
        assert httpx.get(f"{url}/v1/models/claude-opus-4-8").status_code == 200
        assert delta("gateway_requests_total", model="claude-*", provider="toapis", status="200", code="ok") == 1
        assert delta("gateway_requests_total", model="claude-haiku-*", provider="token360", status="200",
                     code="ok") == 2
        assert not any("claude-sonnet-4-5" in str(labels) for _, labels in scrape(url))
