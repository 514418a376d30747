"""Knobs: instance defaults, stacked controls from ``POST /_sim/control``, ``x-sim-*`` headers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any


class KnobError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Knobs:
    ttfb_ms: float = 0
    chunk_delay_ms: float = 0
    words: int | None = None
    status: int | None = None
    retry_after: int | None = None
    reset_after: int | None = None
    stall_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    split_writes: bool = False
    keepalive: bool = False
    drip_ms: float | None = None
    error_code: int | str | None = None
    tool_arguments: str | None = None
    gzip_bomb: int | None = None
    answer_bytes: int | None = None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise KnobError("expected a number")
    number = float(value)
    if not number >= 0:
        raise KnobError("expected a number >= 0")
    return number


def _count(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise KnobError("expected an integer")
    number = int(value)
    if number < 0:
        raise KnobError("expected an integer >= 0")
    return number


def _status(value: Any) -> int:
    status = _count(value)
    if not 400 <= status <= 599:
        raise KnobError("expected an HTTP error status (400-599)")
    return status


def _code(value: Any) -> int | str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise KnobError("expected a non-empty string or an integer")


def _json_object(value: Any) -> str:
    """A tool call's arguments: a JSON object, given as one or as its text."""
    text = value if isinstance(value, str) else json.dumps(value)
    if not isinstance(json.loads(text), dict):
        raise KnobError("expected a JSON object")
    return text


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise KnobError("expected a boolean")


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "ttfb_ms": _number,
    "chunk_delay_ms": _number,
    "words": _count,
    "status": _status,
    "retry_after": _count,
    "reset_after": _count,
    "stall_after": _count,
    "malformed_after": _count,
    "error_after": _count,
    "split_writes": _flag,
    "keepalive": _flag,
    "drip_ms": _number,
    "error_code": _code,
    "tool_arguments": _json_object,
    "gzip_bomb": _count,
    "answer_bytes": _count,
}
assert set(_PARSERS) == {f.name for f in fields(Knobs)}
HEADER_KNOBS: dict[bytes, str] = {b"x-sim-" + name.replace("_", "-").encode(): name for name in _PARSERS}


def parse_knob(name: str, value: Any) -> Any:
    """A knob value from JSON or a header string; ``None`` means "not set by this layer"."""
    if name not in _PARSERS:
        raise KnobError(f"unknown knob {name!r}")
    if value is None:
        return None
    try:
        return _PARSERS[name](value)
    except (TypeError, ValueError) as exc:
        raise KnobError(f"bad value for {name}: {value!r} ({exc})") from None


def parse_knobs(values: dict[str, Any]) -> dict[str, Any]:
    parsed = {name: parse_knob(name, value) for name, value in values.items()}
    return {name: value for name, value in parsed.items() if value is not None}


@dataclass(slots=True)
class Control:
    provider: str | None  # None: every provider
    knobs: dict[str, Any]
    remaining: int | None  # None: until reset


class Controls:
    """Stacked controls; for each knob the newest matching control wins."""

    def __init__(self) -> None:
        self._items: list[Control] = []

    def add(self, control: Control) -> None:
        self._items.append(control)

    def clear(self) -> None:
        self._items.clear()

    def take(self, provider: str) -> dict[str, Any]:
        """Merged knobs for one request to provider; counted controls are used up by it."""
        if not self._items:
            return {}
        merged: dict[str, Any] = {}
        spent = False
        for control in self._items:
            if control.provider is not None and control.provider != provider:
                continue
            merged.update(control.knobs)
            if control.remaining is not None:
                control.remaining -= 1
                spent = spent or control.remaining <= 0
        if spent:
            self._items = [c for c in self._items if c.remaining is None or c.remaining > 0]
        return merged


def resolve(defaults: Knobs, controlled: dict[str, Any], headers: Iterable[tuple[bytes, bytes]]) -> Knobs:
    """defaults < controls < x-sim-* headers. Raises KnobError on a bad header value."""
    layer = dict(controlled)
    for name, value in headers:
        knob = HEADER_KNOBS.get(name.lower()) if name[:6].lower() == b"x-sim-" else None
        if knob is not None:
            parsed = parse_knob(knob, value.decode("latin-1"))
            if parsed is not None:
                layer[knob] = parsed
    return replace(defaults, **layer) if layer else defaults
