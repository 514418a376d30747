"""Checked values from the YAML config: every mistake a :class:`ConfigError` naming file, key and
problem (never the value of a key that may hold a secret)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: ``${VAR}`` and ``${VAR:-default}``, read from the environment
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    def __init__(self, path: str | Path, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")


def expand(value: str, path: str, key: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(path, key, f"environment variable {name} is not set")
    return VAR.sub(one, value)


def mapping(value: Any, path: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


def string(raw: Mapping[str, Any], name: str, path: str, key: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{key}.{name}", "required, a non-empty string")
    return expand(value, path, f"{key}.{name}")


def numbers(raw: Any, path: str, key: str, names: tuple[str, ...], aliases: Mapping[str, str] | None = None,
             integers: tuple[str, ...] = (), unit: str = "seconds") -> dict[str, Any]:
    """A mapping of positive numbers with known names (``aliases``: old name -> new name)."""
    values: dict[str, Any] = {}
    for written, value in mapping(raw, path, key).items():
        name = (aliases or {}).get(written, written)
        if name not in names:
            raise ConfigError(path, f"{key}.{written}", f"unknown; expected {', '.join(names)}")
        if name in values:
            raise ConfigError(path, f"{key}.{written}", f"given twice (as {written} and {name})")
        if name in integers:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(path, f"{key}.{written}", f"expected a whole number of at least 1, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise ConfigError(path, f"{key}.{written}", f"expected a positive number of {unit}, got {value!r}")
        values[name] = value if name in integers else float(value)
    return values


def is_pattern(name: str) -> bool:
    """Whether a configured model name is a glob (an alias such as ``claude-*``, a key's ``models``)."""
    return any(c in name for c in "*?[")
