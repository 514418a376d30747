"""Virtual keys (issue 14): who a client is, which models it may ask for, its limits and budget.

Format, beside ``providers`` and ``models`` in the YAML (reloaded with them)::

    keys:
      search-app:
        key_sha256: 9f86d0...          # the SHA-256 of the key, hex; or key: ${SEARCH_APP_KEY}
        models: [glm-4.7, "glm-5*"]    # aliases or patterns it may ask for; absent: all
        limits: {requests_per_minute: 600, tokens_per_minute: 200000, max_concurrent: 50}
        budget: {usd_per_month: 200}   # and/or tokens_per_month, usd_per_day, tokens_per_day

A key is found by the SHA-256 of what the client sent: one dict lookup whatever the number of keys,
and no plaintext is kept. The keys of ``GATEWAY_API_KEYS`` are keys too, named ``env``, with no
limits; with no key at all the gateway is open and every request's key is ``none``.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Literal

from .yamlvalues import ConfigError, expand, is_pattern, mapping, numbers

KEY = "gateway.key"  #: where the auth middleware leaves the request's Key in the ASGI scope
ENV = "env"  #: the name of GATEWAY_API_KEYS's keys in metrics and log lines
OPEN = "none"  #: the key of every request when no keys are configured
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_LIMITS = ("requests_per_minute", "tokens_per_minute", "max_concurrent")
_BUDGETS = ("usd_per_month", "tokens_per_month", "usd_per_day", "tokens_per_day")
_KEY_FIELDS = {"key", "key_sha256", "models", "limits", "budget"}


@lru_cache(maxsize=16)
def _period(kind: str, day: int) -> tuple[str, float]:
    """A budget period of the ``day``-th UTC day since the epoch (periods start and end at
    midnight UTC, so the day settles it): worked out once a day, not per request."""
    start = datetime.fromtimestamp(day * 86400, UTC)
    if kind == "day":
        return start.strftime("%Y-%m-%d"), start.timestamp() + 86400
    first = datetime(start.year, start.month, 1, tzinfo=UTC)
    return first.strftime("%Y-%m"), first.timestamp() + calendar.monthrange(start.year, start.month)[1] * 86400


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None


_NO_LIMITS = Limits()


@dataclass(frozen=True)
class Budget:
    unit: Literal["usd", "tokens"]
    period: Literal["day", "month"]
    cap: float

    def current(self, now: float) -> tuple[str, float]:
        """The period ``now`` (epoch seconds) falls in, as its name (``2026-12``, ``2026-12-01``,
        UTC), and the epoch second it ends."""
        return _period(self.period, int(now // 86400))

    @property
    def name(self) -> str:
        return f"{self.unit}_per_{self.period}"


@dataclass(frozen=True)
class Key:
    name: str
    models: tuple[str, ...] | None = None  # None: every alias
    limits: Limits = Limits()
    budgets: tuple[Budget, ...] = ()
    _exact: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _patterns: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: who its stored Responses belong to: its name, or for one of GATEWAY_API_KEYS (all named
    #: ``env``) its own digest
    owner: str = ""
    #: whether admission has anything to count for this key (worked out once: asked per request)
    limited: bool = field(default=False, init=False, repr=False, compare=False)
    #: whether the gateway answers it its own x-ratelimit-* (it has a requests or tokens limit)
    paced: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limited", self.limits != _NO_LIMITS or bool(self.budgets))
        object.__setattr__(self, "paced", self.limits.requests_per_minute is not None
                           or self.limits.tokens_per_minute is not None)
        object.__setattr__(self, "owner", self.owner or self.name)
        if self.models is not None:
            object.__setattr__(self, "_exact", frozenset(self.models))
            object.__setattr__(self, "_patterns", tuple(m for m in self.models if is_pattern(m)))

    def allows(self, alias: str, model: str) -> bool:
        """May this key ask for ``model`` (which routes as ``alias``)? A pattern of the key's is
        matched against the alias, what routes: ``glm-4*`` must not let ``glm-4-x`` through a
        catch-all alias ``glm-*`` to another model."""
        return model in self._exact or self.lists(alias)

    def lists(self, alias: str) -> bool:
        """Whether the key may use the alias (and ``/v1/models`` shows it)."""
        return self.models is None or alias in self._exact or any(fnmatchcase(alias, p) for p in self._patterns)


UNLIMITED_OPEN = Key(OPEN)


def key_of(scope: Mapping[str, Any]) -> Key:
    """The request's key, as the auth middleware left it (none: no keys are configured)."""
    key: Key | None = scope.get(KEY)
    return key or UNLIMITED_OPEN


class Keys:
    """Every key the gateway takes, by the SHA-256 of its plaintext."""

    def __init__(self, configured: Mapping[bytes, Key], env_keys: Iterable[str] = ()) -> None:
        self._by_digest = {d: Key(ENV, owner=f"{ENV}:{d.hex()[:32]}") for d in map(digest, env_keys)}
        self._by_digest.update(configured)  # a configured key wins over the same one in GATEWAY_API_KEYS

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def find(self, token: str | None) -> Key | None:
        if not self._by_digest:
            return UNLIMITED_OPEN
        return None if token is None else self._by_digest.get(digest(token))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(k.name for k in self._by_digest.values())


def parse(raw: Any, path: str, aliases: Iterable[str]) -> dict[bytes, Key]:
    """The ``keys:`` section, checked: each key's digest -> its Key."""
    keys: dict[bytes, Key] = {}
    aliases = list(aliases)
    for name, value in mapping(raw or {}, path, "keys").items():
        where = f"keys.{name}"
        name = str(name)
        if not _NAME.fullmatch(name) or name in (ENV, OPEN):
            raise ConfigError(path, where, f"a key's name is a metric label: letters, digits, '_', '.', '-' "
                              f"(at most 64), and not {ENV!r} or {OPEN!r}")
        value = mapping(value, path, where)
        unknown = set(value) - _KEY_FIELDS
        if unknown:
            raise ConfigError(path, f"{where}.{sorted(unknown)[0]}",
                              f"unknown; expected {', '.join(sorted(_KEY_FIELDS))}")
        key_digest = _digest_of(value, path, where)
        if key_digest in keys:
            raise ConfigError(path, where, f"the same key as keys.{keys[key_digest].name}")
        keys[key_digest] = Key(name, _models(value.get("models"), path, f"{where}.models", aliases),
                               Limits(**numbers(value.get("limits") or {}, path, f"{where}.limits", _LIMITS,
                                                integers=_LIMITS)),
                               _budgets(value.get("budget"), path, f"{where}.budget"))
    return keys


def _digest_of(value: Mapping[str, Any], path: str, where: str) -> bytes:
    if ("key" in value) == ("key_sha256" in value):
        raise ConfigError(path, where, "needs one of key_sha256 (hex) or key (e.g. ${APP_KEY})")
    if "key_sha256" in value:
        hex_digest = value["key_sha256"]
        if not isinstance(hex_digest, str) or not _HEX_DIGEST.fullmatch(hex_digest.lower()):
            raise ConfigError(path, f"{where}.key_sha256", "expected 64 hex digits (gateway key new NAME prints them)")
        return bytes.fromhex(hex_digest)
    plain = value["key"]
    if not isinstance(plain, str) or not plain:
        raise ConfigError(path, f"{where}.key", "expected a non-empty string, e.g. ${APP_KEY}")
    plain = expand(plain, path, f"{where}.key")
    if not plain:
        raise ConfigError(path, f"{where}.key", "empty once its variables are read")
    return digest(plain)


def _models(raw: Any, path: str, where: str, aliases: list[str]) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(m, str) and m for m in raw):
        raise ConfigError(path, where, "expected a list of aliases or patterns")
    for i, model in enumerate(raw):
        if not any(model == a or fnmatchcase(model, a) or fnmatchcase(a, model) for a in aliases):
            raise ConfigError(path, f"{where}[{i}]", f"{model!r} is no configured alias and matches none")
    return tuple(raw)


def _budgets(raw: Any, path: str, where: str) -> tuple[Budget, ...]:
    if raw is None:
        return ()
    caps = numbers(raw, path, where, _BUDGETS, unit="dollars or tokens")
    return tuple(Budget(name.split("_")[0], name.rsplit("_", 1)[1], cap)  # type: ignore[arg-type]
                 for name, cap in caps.items())


def new_key(name: str) -> tuple[str, str]:
    """A fresh random key for ``name``, and the YAML lines that configure it by its hash."""
    if not _NAME.fullmatch(name) or name in (ENV, OPEN):
        raise ValueError(f"{name!r}: letters, digits, '_', '.', '-' (at most 64), and not {ENV!r} or {OPEN!r}")
    plain = "sk-glmgw-" + secrets.token_urlsafe(32)
    return plain, f"keys:\n  {name}:\n    key_sha256: {digest(plain).hex()}\n"
