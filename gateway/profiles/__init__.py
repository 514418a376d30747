"""Built-in upstream profiles: each upstream's documented limits and dialect, as data.

One YAML file per upstream in this folder; every value is ``{value: ..., doc: "LINE quote"}`` so
each limit the gateway enforces points at the line of the upstream's page it comes from. A user's
``limits:`` in gateway.yaml overrides values with plain ones, checked by the same schema. A sixth
reseller is one new file here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent

Range = tuple[float, float]


class ProfileError(ValueError):
    """A profile value of the wrong type; ``key`` is the dotted path to it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Limits:
    """What an upstream's page documents as allowed. ``None`` / ``False``: the page says nothing."""

    temperature: Range | None = None
    top_p: Range | None = None
    max_tokens: Range | None = None
    thinking_budget: Range | None = None
    min_p: Range | None = None
    stop_max: int | None = None
    messages_min: int | None = None
    messages_max: int | None = None
    needs_user_turn: bool = False
    roles: frozenset[str] | None = None
    tool_message_needs_id: bool = False
    content_string_only: bool = False
    content_parts: frozenset[str] | None = None
    tool_types: frozenset[str] | None = None
    tools_max: int | None = None
    tool_choice: frozenset[str] | None = None
    #: limit name -> the doc line it comes from
    docs: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ContentFilter:
    """How an upstream says "blocked by content policy" (status, body codes, phrases)."""

    status: int
    codes: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quota:
    """How an upstream says the account has no balance left (statuses, body codes): not a rate
    limit, so the request fails over at once and is not retried on that upstream (issue 10)."""

    statuses: frozenset[int] = frozenset()
    codes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ThinkingDialect:
    name: str
    enabled: Mapping[str, Any] = field(default_factory=dict)
    disabled: Mapping[str, Any] = field(default_factory=dict)
    auto: Mapping[str, Any] = field(default_factory=dict)
    budget_field: str | None = None
    effort_budgets: Mapping[str, int] = field(default_factory=dict)
    passthrough: bool = False

    @property
    def controls(self) -> bool:
        return self.passthrough or bool(self.enabled)


@dataclass(frozen=True)
class Profile:
    name: str
    doc: str
    thinking: ThinkingDialect
    limits: Limits
    stream_default: bool = False
    stop_as_list: bool = False
    stream_options: bool = False
    developer_role: bool = False
    pass_headers: tuple[str, ...] = ()
    content_filter: ContentFilter | None = None
    quota: Quota = Quota()
    #: the only upstream models that take the dialect's on/off switch (None: every model)
    thinking_models: frozenset[str] | None = None
    #: body fields outside OpenAI's API that this upstream's page documents (see foreign_fields)
    extra_fields: frozenset[str] = frozenset()

    def with_overrides(self, limits: Mapping[str, Any] | None, thinking: str | None, where: str) -> Profile:
        """This profile with a user's ``limits:`` and ``thinking:`` applied (checked like the built-ins)."""
        changes: dict[str, Any] = {}
        if limits:
            parsed = _parse_limits(limits, where + ".limits", plain=True)
            docs = {**self.limits.docs, **{k: f"{where}.limits.{k}" for k in limits}}
            changes["limits"] = dataclasses.replace(self.limits, **parsed, docs=docs)
        if thinking is not None:
            changes["thinking"] = thinking_dialect(thinking, where + ".thinking")
        return dataclasses.replace(self, **changes) if changes else self

    @cached_property
    def foreign_fields(self) -> tuple[str, ...]:
        """Another dialect's fields, in order: what some built-in page documents and this one does
        not (siliconflow's top_k, say, sent to an upstream that never heard of it). Worked out once
        per profile: the rewrite drops them from every request."""
        return tuple(sorted(_all_extra_fields() - self.extra_fields))


# Each limit's kind: how its YAML value is checked and converted.
_KIND_OF_TYPE = {"Range | None": "range", "int | None": "int", "bool": "bool", "frozenset[str] | None": "names"}
_LIMIT_KINDS: dict[str, str] = {
    f.name: _KIND_OF_TYPE[str(f.type)] for f in dataclasses.fields(Limits) if f.name != "docs"
}
_DIALECT_KEYS = {"thinking", "stream_default", "stop_as_list", "stream_options", "developer_role",
                 "pass_headers", "content_filter", "quota", "thinking_models", "extra_fields"}


def _convert(kind: str, value: Any, key: str) -> Any:
    if kind == "range":
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                or value[0] > value[1]):
            raise ProfileError(key, f"expected a range [low, high] of numbers, got {value!r}")
        return (float(value[0]), float(value[1]))
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProfileError(key, f"expected a non-negative integer, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ProfileError(key, f"expected true or false, got {value!r}")
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(key, f"expected a list of names, got {value!r}")
    return frozenset(value)


def _unwrap(raw: Any, key: str, plain: bool) -> tuple[Any, str]:
    if plain:
        return raw, ""
    if not isinstance(raw, dict) or "value" not in raw or not isinstance(raw.get("doc"), str):
        raise ProfileError(key, "expected {value: ..., doc: \"line quote\"}")
    return raw["value"], raw["doc"]


def _parse_limits(raw: Mapping[str, Any], where: str, plain: bool) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ProfileError(where, f"expected a mapping of limits, got {raw!r}")
    out: dict[str, Any] = {}
    for name, item in raw.items():
        key = f"{where}.{name}"
        if name not in _LIMIT_KINDS:
            raise ProfileError(key, f"unknown limit; known: {', '.join(sorted(_LIMIT_KINDS))}")
        value, _ = _unwrap(item, key, plain)
        out[name] = _convert(_LIMIT_KINDS[name], value, key)
    return out


@cache
def _thinking_table() -> dict[str, Any]:
    return yaml.safe_load((HERE / "thinking.yaml").read_text())


def thinking_dialect(name: str, where: str = "thinking") -> ThinkingDialect:
    table = _thinking_table()
    if name not in table:
        raise ProfileError(where, f"unknown thinking dialect {name!r}; known: {', '.join(table)}")
    return ThinkingDialect(name=name, **(table[name] or {}))


def _load(name: str) -> Profile:
    path = HERE / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    where = path.name
    limits_raw = raw.get("limits") or {}
    limits = _parse_limits(limits_raw, f"{where}:limits", plain=False)
    docs = {k: f"{raw['doc']}:{v['doc']}" for k, v in limits_raw.items()}
    dialect: dict[str, Any] = {}
    for key, item in (raw.get("dialect") or {}).items():
        if key not in _DIALECT_KEYS:
            raise ProfileError(f"{where}:dialect.{key}", "unknown dialect key")
        dialect[key], _ = _unwrap(item, f"{where}:dialect.{key}", plain=False)
    thinking = thinking_dialect(dialect.pop("thinking", "none"), f"{where}:dialect.thinking")
    if "content_filter" in dialect:
        cf = dialect["content_filter"]
        dialect["content_filter"] = ContentFilter(
            status=cf["status"], codes=frozenset(map(str, cf.get("codes", ()))),
            phrases=tuple(p.lower() for p in cf.get("phrases", ())))
    if "quota" in dialect:
        quota = dialect["quota"]
        dialect["quota"] = Quota(statuses=frozenset(map(int, quota.get("statuses", ()))),
                                 codes=frozenset(map(str, quota.get("codes", ()))))
    for key in ("thinking_models", "extra_fields"):
        if key in dialect:
            dialect[key] = frozenset(dialect[key])
    if "pass_headers" in dialect:
        dialect["pass_headers"] = tuple(h.lower() for h in dialect["pass_headers"])
    return Profile(name=name, doc=raw["doc"], thinking=thinking, limits=Limits(**limits, docs=docs), **dialect)


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml") if p.stem != "thinking")


@cache
def _all_extra_fields() -> frozenset[str]:
    return frozenset().union(*(builtin(n).extra_fields for n in names()))


@cache
def builtin(name: str) -> Profile:
    """The built-in profile ``name``; KeyError when there is none."""
    if name not in names():
        raise KeyError(name)
    return _load(name)
