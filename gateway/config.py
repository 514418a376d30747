"""gateway.yaml -> a typed, closed routing table.

Format (issue 4)::

    providers:
      NAME:
        profile: PROFILE              # built-in profile; defaults to NAME when that is one
        base_url: https://api.example.com/v1
        api_key: ${EXAMPLE_API_KEY}
        limits: {stop_max: 2}         # optional: overrides the profile's limits
        thinking: zhipu               # optional: overrides the profile's thinking dialect
        timeout: {connect: 10, first_byte: 300, idle: 300, total: 600}   # seconds
        retry: {attempts: 3, backoff_base: 0.05, backoff_max: 2}
        pool: {connections: 256, wait: 2}   # upstream connections of its own; seconds to wait for one
    models:
      ALIAS:
        - {provider: NAME, model: upstream-model, weight: 3}   # weight: optional, load balancing
    keys: {...}                       # optional: virtual keys, their limits and budgets (gateway/keys.py)
    prices: {...}                     # optional: USD per million tokens by route (gateway/prices.py)

``${VAR}`` and ``${VAR:-default}`` are read from the environment. An unset ``api_key`` variable
disables its provider with a warning (users often hold keys for only some upstreams); an unset
variable anywhere else, like any other mistake, is a :class:`ConfigError` naming file, key, problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from . import keys, prices, profiles
from .keys import Key
from .prices import Price
from .profiles import Profile, ProfileError
from .yamlvalues import VAR, ConfigError, expand, mapping, numbers, string

_PROVIDER_KEYS = {"profile", "base_url", "api_key", "limits", "thinking", "timeout", "retry", "pool"}


@dataclass(frozen=True)
class Timeout:
    """Seconds (issue 10). Thinking models can be silent for minutes, and a non-streaming thinking
    answer's headers come only when it is done: hence first_byte and idle of 300."""

    connect: float = 10.0
    first_byte: float = 300.0  # to the first SSE data event, or to a JSON answer's headers
    idle: float = 300.0  # the longest gap between upstream bytes, waiting on the upstream only
    total: float = 600.0  # everything one request spends on this provider, retries and backoff included


@dataclass(frozen=True)
class Retry:
    attempts: int = 3  # on one route, the first included
    backoff_base: float = 0.05  # seconds; exponential with full jitter
    backoff_max: float = 2.0


@dataclass(frozen=True)
class Pool:
    """A provider's own share of upstream connections (issue 11): a stalling provider fills only its
    own pool, never another's.

    256: the one pool of 1,000 the gateway had before, split over the five providers of the shipped
    config (5 x 256 = 1,280), so the connections (and descriptors) a deployment may hold open stay
    about what they were, while a provider that stalls can hold at most its own 256; a provider
    that serves more streams at once says so in its YAML. 2 s: a slot frees when any of the
    provider's streams ends, and streams last seconds to minutes, so a longer wait seldom gets one;
    the time is better spent on the next route, or on a 503 with Retry-After a client can act on."""

    connections: int = 256  # attempts in flight to this provider at once (each holds one connection)
    wait: float = 2.0  # seconds an attempt waits for a free one before it fails as pool_exhausted


@dataclass(frozen=True)
class Provider:
    name: str
    profile: Profile
    base_url: str
    api_key: str | None  # None: disabled, its key variable is unset
    key_variable: str | None = None
    timeout: Timeout = field(default_factory=Timeout)
    retry: Retry = field(default_factory=Retry)
    pool: Pool = field(default_factory=Pool)

    @property
    def enabled(self) -> bool:
        return self.api_key is not None

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True)
class Route:
    provider: Provider
    model: str
    weight: float | None = None  # given on any route of an alias: its routes are load balanced


@dataclass(frozen=True)
class Config:
    path: str
    providers: Mapping[str, Provider]
    models: Mapping[str, tuple[Route, ...]]
    keys: Mapping[bytes, Key] = field(default_factory=dict)  # virtual keys by SHA-256 (gateway/keys.py)
    prices: Mapping[tuple[str, str], Price] = field(default_factory=dict)  # (provider, upstream model)

    @property
    def upstream_connections(self) -> int:
        """The most upstream connections one process can hold open at once with this table: its
        enabled providers' pools (a disabled provider is never called). Per worker process."""
        return sum(p.pool.connections for p in self.providers.values() if p.enabled)

    def warnings(self) -> list[str]:
        routed = {(r.provider.name, r.model) for routes in self.models.values() for r in routes}
        return [f"provider {p.name} is disabled: set {p.key_variable} to enable it"
                for p in self.providers.values() if not p.enabled] + [
                f"prices.{provider}/{model}: no alias routes to it, so it is never used"
                for provider, model in self.prices if (provider, model) not in routed]


def _api_key(raw: Mapping[str, Any], path: str, key: str) -> tuple[str | None, str | None]:
    value = raw.get("api_key")
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{key}.api_key", "required: a key, or ${VARIABLE} to read it from")
    match = VAR.fullmatch(value)
    if match and not os.environ.get(match.group(1)) and match.group(2) is None:
        return None, match.group(1)  # unset or empty (a blank line in an .env file): disabled
    return expand(value, path, f"{key}.api_key"), match.group(1) if match else None


def _timeout(raw: Any, path: str, key: str) -> Timeout:
    if raw is None:
        return Timeout()
    # "read" was the name of "idle" before issue 10: still accepted
    return Timeout(**numbers(raw, path, key, ("connect", "first_byte", "idle", "total"), {"read": "idle"}))


def _retry(raw: Any, path: str, key: str) -> Retry:
    if raw is None:
        return Retry()
    retry = Retry(**numbers(raw, path, key, ("attempts", "backoff_base", "backoff_max"), integers=("attempts",)))
    if retry.backoff_base > retry.backoff_max:
        raise ConfigError(path, f"{key}.backoff_base", f"larger than backoff_max ({retry.backoff_max})")
    return retry


def _pool(raw: Any, path: str, key: str) -> Pool:
    if raw is None:
        return Pool()
    return Pool(**numbers(raw, path, key, ("connections", "wait"), integers=("connections",)))


def _provider(name: str, raw: Any, path: str) -> Provider:
    key = f"providers.{name}"
    raw = mapping(raw, path, key)
    unknown = set(raw) - _PROVIDER_KEYS
    if unknown:
        raise ConfigError(path, f"{key}.{sorted(unknown)[0]}",
                          f"unknown key; expected {', '.join(sorted(_PROVIDER_KEYS))}")
    profile_name = raw.get("profile", name)
    if not isinstance(profile_name, str):
        raise ConfigError(path, f"{key}.profile", f"expected a profile name; built-in: {', '.join(profiles.names())}")
    try:
        profile = profiles.builtin(profile_name)
    except KeyError:
        raise ConfigError(path, f"{key}.profile", f"unknown profile {profile_name!r}; "
                          f"built-in: {', '.join(profiles.names())}") from None
    thinking = raw.get("thinking")
    if thinking is not None and not isinstance(thinking, str):
        raise ConfigError(path, f"{key}.thinking", "expected a dialect name")
    try:
        profile = profile.with_overrides(raw.get("limits"), thinking, key)
    except ProfileError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None
    base_url = string(raw, "base_url", path, key)
    try:
        parts = urlsplit(base_url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(path, f"{key}.base_url", f"expected an http(s) URL, got {base_url!r}")
    api_key, variable = _api_key(raw, path, key)
    return Provider(name=name, profile=profile, base_url=base_url, api_key=api_key, key_variable=variable,
                    timeout=_timeout(raw.get("timeout"), path, f"{key}.timeout"),
                    retry=_retry(raw.get("retry"), path, f"{key}.retry"),
                    pool=_pool(raw.get("pool"), path, f"{key}.pool"))


def _routes(alias: str, raw: Any, providers: Mapping[str, Provider], path: str) -> tuple[Route, ...]:
    key = f"models.{alias}"
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, key, "expected a non-empty list of {provider, model} routes")
    routes = []
    for i, item in enumerate(raw):
        item = mapping(item, path, f"{key}[{i}]")
        provider = string(item, "provider", path, f"{key}[{i}]")
        if provider not in providers:
            raise ConfigError(path, f"{key}[{i}].provider", f"unknown provider {provider!r}; "
                              f"configured: {', '.join(providers) or 'none'}")
        unknown = set(item) - {"provider", "model", "weight"}
        if unknown:
            raise ConfigError(path, f"{key}[{i}].{sorted(unknown)[0]}", "unknown key; expected provider, model, weight")
        weight = item.get("weight")
        if weight is not None and (not isinstance(weight, (int, float)) or isinstance(weight, bool)
                                   or not 0 <= weight < float("inf")):
            raise ConfigError(path, f"{key}[{i}].weight", f"expected a number >= 0, got {weight!r}")
        routes.append(Route(providers[provider], string(item, "model", path, f"{key}[{i}]"),
                            None if weight is None else float(weight)))
    return tuple(routes)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's quote of the line: that line may hold a literal key."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load(path: str | Path) -> Config:
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "(file)", exc.strerror or str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "(file)", f"not UTF-8 text (byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, "(yaml)", _yaml_problem(exc)) from None
    try:
        return _table(raw, path)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:  # a shape no check above foresaw
        raise ConfigError(path, "(structure)", f"unexpected value ({type(exc).__name__})") from None


def _table(raw: Any, path: str) -> Config:
    raw = mapping(raw, path, "(top level)")
    unknown = set(raw) - {"providers", "models", "keys", "prices"}
    if unknown:
        raise ConfigError(path, sorted(unknown)[0], "unknown key; expected providers, models, keys and prices")
    providers = {name: _provider(str(name), value, path)
                 for name, value in mapping(raw.get("providers") or {}, path, "providers").items()}
    models = {str(alias): _routes(str(alias), value, providers, path)
              for alias, value in mapping(raw.get("models") or {}, path, "models").items()}
    if not models:
        raise ConfigError(path, "models", "no model aliases: clients would have nothing to ask for")
    return Config(path=path, providers=providers, models=models, keys=keys.parse(raw.get("keys"), path, models),
                  prices=prices.parse(raw.get("prices"), path, providers))
