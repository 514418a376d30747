"""gateway.yaml: the shipped files load, and every mistake stops start-up naming file, key, problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[1]
GOOD = """
providers:
  sf:
    profile: siliconflow
    base_url: http://127.0.0.1:1/v1
    api_key: ${TEST_SF_KEY}
  pt:
    profile: powertokens
    base_url: http://127.0.0.1:1/v1
    api_key: literal-key
models:
  a:
    - {provider: sf, model: m1}
    - {provider: pt, model: m2}
  only-sf:
    - {provider: sf, model: m1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(ROOT / "config" / "gateway.yaml")
    assert {p.profile.name for p in config.providers.values()} == {
        "powertokens", "token360", "siliconflow", "toapis", "maxtoken"}
    assert load(ROOT / "config" / "demo.yaml").models


@pytest.mark.parametrize("unset", [None, ""])  # an empty value, as a blank line of an .env file gives
def test_unset_key_variable_disables_the_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  unset: str | None) -> None:
    if unset is None:
        monkeypatch.delenv("TEST_SF_KEY", raising=False)
    else:
        monkeypatch.setenv("TEST_SF_KEY", unset)
    config = load(write(tmp_path, GOOD))
    assert not config.providers["sf"].enabled and config.providers["pt"].api_key == "literal-key"
    assert config.warnings() == ["provider sf is disabled: set TEST_SF_KEY to enable it"]
    monkeypatch.setenv("TEST_SF_KEY", "sk-sf")
    assert load(write(tmp_path, GOOD)).providers["sf"].api_key == "sk-sf"


@pytest.mark.parametrize("text, key, problem", [
    ("providers: [\n", "(yaml)", "line 2, column 1: expected the node content"),
    ("providers:\n  pt:\n    api_key: sk-live-SECRET: oops\n", "(yaml)", "line 3"),  # the line is not quoted
    (GOOD.replace("profile: siliconflow", "profile: [x]"), "providers.sf.profile", "expected a profile name"),
    (GOOD.replace("http://127.0.0.1:1/v1\n    api_key: literal-key", "http://[::1/v1\n    api_key: literal-key"),
     "providers.pt.base_url", "expected an http(s) URL"),
    (GOOD.replace("profile: siliconflow", "profile: nosuch"), "providers.sf.profile", "unknown profile 'nosuch'"),
    (GOOD.replace("{provider: pt, model: m2}", "{provider: ghost, model: m2}"), "models.a[1].provider",
     "unknown provider 'ghost'"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    limits: {temperature: hot}"),
     "providers.pt.limits.temperature", "expected a range"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    limits: {stop_max: 1.5}"),
     "providers.pt.limits.stop_max", "expected a non-negative integer"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    limits: {colour: 3}"),
     "providers.pt.limits.colour", "unknown limit"),
    (GOOD.replace("base_url: http://127.0.0.1:1/v1\n    api_key: literal-key",
                  "base_url: ${TEST_UNSET_URL}\n    api_key: literal-key"),
     "providers.pt.base_url", "environment variable TEST_UNSET_URL is not set"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    limits: {temperature: [0, .nan]}"),
     "providers.pt.limits.temperature", "expected a range"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    timeout: {read: -1}"),
     "providers.pt.timeout.read", "positive number"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    timeout: {first_byte: 0}"),
     "providers.pt.timeout.first_byte", "positive number"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    timeout: {deadline: 3}"),
     "providers.pt.timeout.deadline", "unknown; expected connect, first_byte, idle, total"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    timeout: {read: 3, idle: 4}"),
     "providers.pt.timeout.idle", "given twice"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    retry: {attempts: 0}"),
     "providers.pt.retry.attempts", "whole number of at least 1"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    retry: {attempts: 2.5}"),
     "providers.pt.retry.attempts", "whole number of at least 1"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    retry: {backoff_base: 3, backoff_max: 1}"),
     "providers.pt.retry.backoff_base", "larger than backoff_max"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    retry: [3]"),
     "providers.pt.retry", "expected a mapping"),
    (GOOD.replace("{provider: pt, model: m2}", "{provider: pt, model: m2, weight: -1}"),
     "models.a[1].weight", "expected a number >= 0"),
    (GOOD.replace("{provider: pt, model: m2}", "{provider: pt, model: m2, priority: 1}"),
     "models.a[1].priority", "unknown key; expected provider, model, weight"),
    (GOOD.replace("api_key: literal-key", "api_key: literal-key\n    thinking: telepathy"),
     "providers.pt.thinking", "unknown thinking dialect"),
    (GOOD.replace("http://127.0.0.1:1/v1\n    api_key: literal-key", "ftp://x/v1\n    api_key: literal-key"),
     "providers.pt.base_url", "expected an http(s) URL"),
    ("providers: {}\nmodels: {}\n", "models", "no model aliases"),
])
def test_config_errors_name_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message and "SECRET" not in message


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"providers: {}\nmodels:\n  \xff\xfe: []\n")
    with pytest.raises(ConfigError, match=r"\(file\): not UTF-8"):
        load(path)


def test_overrides_keep_the_profile_and_cite_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("api_key: literal-key", "api_key: literal-key\n    limits: {stop_max: 3}\n"
                                        "    thinking: siliconflow"))
    profile = load(path).providers["pt"].profile
    assert profile.limits.stop_max == 3 and profile.limits.temperature == (0, 1)
    assert profile.limits.docs["stop_max"] == "providers.pt.limits.stop_max"
    assert profile.thinking.budget_field == "thinking_budget"


def gateway_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, env=env)


def test_check_prints_the_table_and_the_disabled_providers(tmp_path: Path) -> None:
    result = gateway_cli("check", "--config", str(write(tmp_path, GOOD)), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "sf " in result.stdout and "DISABLED (set TEST_SF_KEY)" in result.stdout
    assert "only-sf" in result.stdout and "no enabled route: answers 503" in result.stdout
    assert "a                -> sf:m1 (disabled), pt:m2" in result.stdout
    assert "warning: provider sf is disabled: set TEST_SF_KEY" in result.stderr


def test_check_and_serve_stop_on_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("profile: siliconflow", "profile: nosuch"))
    for command in (["check"], ["serve", "--port", "1"]):
        result = gateway_cli(*command, "--config", str(path))
        assert result.returncode != 0
        assert f"config error: {path}: providers.sf.profile: unknown profile 'nosuch'" in result.stderr
        assert "Traceback" not in result.stderr


def test_serve_refuses_a_public_address_without_client_keys(tmp_path: Path) -> None:
    result = gateway_cli("serve", "--config", str(write(tmp_path, GOOD)), "--host", "0.0.0.0", "--port", "1",
                         env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "refusing to serve on 0.0.0.0 without client keys" in result.stderr


def test_timeouts_retries_and_weights_are_read(tmp_path: Path) -> None:
    text = GOOD.replace("api_key: literal-key", "api_key: literal-key\n    timeout: {read: 7, total: 20}\n"
                        "    retry: {attempts: 5, backoff_max: 1}").replace("{provider: pt, model: m2}",
                                                                           "{provider: pt, model: m2, weight: 3}")
    config = load(write(tmp_path, text))
    pt = config.providers["pt"]
    assert (pt.timeout.connect, pt.timeout.first_byte, pt.timeout.idle, pt.timeout.total) == (10, 300, 7, 20)
    assert (pt.retry.attempts, pt.retry.backoff_base, pt.retry.backoff_max) == (5, 0.05, 1)
    assert [r.weight for r in config.models["a"]] == [None, 3.0]
