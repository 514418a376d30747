"""What an answer cost (issue 14): its usage times the price of the route that answered.

Format, beside ``providers`` and ``models`` in the YAML, in USD per million tokens::

    prices:
      my-reseller/Pro/zai-org/GLM-4.7: {prompt: 0.55, completion: 2.2, cached_prompt: 0.11}

The key is a configured provider's name, a slash, and its upstream model (which may hold slashes
itself). Cached prompt tokens cost ``cached_prompt`` (the prompt price when not given); reasoning
tokens are completion tokens, as every upstream bills them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .yamlvalues import ConfigError, mapping

_FIELDS = ("prompt", "completion", "cached_prompt")


@dataclass(frozen=True)
class Price:
    prompt: float
    completion: float
    cached_prompt: float

    def cost(self, usage: Mapping[str, Any]) -> float:
        """USD for one answer's ``usage`` (OpenAI's shape: prompt_tokens, completion_tokens,
        prompt_tokens_details.cached_tokens)."""
        prompt, completion = count(usage, "prompt_tokens"), count(usage, "completion_tokens")
        cached = min(count(usage, "prompt_tokens_details", "cached_tokens"), prompt)
        return ((prompt - cached) * self.prompt + cached * self.cached_prompt
                + completion * self.completion) / 1_000_000


def count(usage: Mapping[str, Any], name: str, detail: str | None = None) -> int:
    """A token count from an upstream's usage (``detail``: within its ``name`` object, as
    ``prompt_tokens_details.cached_tokens``): a positive integer, else 0."""
    value = usage.get(name)
    if detail is not None:
        value = value.get(detail) if type(value) is dict else None
    return value if type(value) is int and value > 0 else 0  # (JSON's: never a bool, nor a subclass)


def tokens(usage: Mapping[str, Any] | None) -> int:
    """What a request counts against token limits and budgets: ``total_tokens`` (prompt and
    completion, reasoning included), or their sum when an upstream leaves the total out."""
    if not usage:
        return 0
    return count(usage, "total_tokens") or count(usage, "prompt_tokens") + count(usage, "completion_tokens")


def parse(raw: Any, path: str, providers: Iterable[str]) -> dict[tuple[str, str], Price]:
    """The ``prices:`` section, checked: (provider, upstream model) -> its Price."""
    known = set(providers)
    prices: dict[tuple[str, str], Price] = {}
    for name, value in mapping(raw or {}, path, "prices").items():
        where = f"prices.{name}"
        provider, slash, model = str(name).partition("/")
        if not slash or not model:
            raise ConfigError(path, where, "expected PROVIDER/UPSTREAM_MODEL, e.g. my-reseller/Pro/zai-org/GLM-4.7")
        if provider not in known:
            raise ConfigError(path, where, f"unknown provider {provider!r}; configured: {', '.join(sorted(known))}")
        value = mapping(value, path, where)
        for field_name, number in value.items():
            if field_name not in _FIELDS:
                raise ConfigError(path, f"{where}.{field_name}", f"unknown; expected {', '.join(_FIELDS)}")
            if not isinstance(number, (int, float)) or isinstance(number, bool) or not 0 <= number < float("inf"):
                raise ConfigError(path, f"{where}.{field_name}",
                                  f"expected USD per million tokens (>= 0), got {number!r}")
        for required in ("prompt", "completion"):
            if required not in value:
                raise ConfigError(path, f"{where}.{required}", "required (USD per million tokens)")
        prices[(provider, model)] = Price(float(value["prompt"]), float(value["completion"]),
                                          float(value.get("cached_prompt", value["prompt"])))
    return prices
