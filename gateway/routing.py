"""Alias -> ordered routes, and which of them can take a given request.

An alias may be a glob (``claude-*``: Claude Code asks for names of its own, issue 12): a name
the client sends is its exact alias when there is one, else the first pattern, in file order, that
matches it. The alias is what metrics and routes know; the client's name is only echoed back.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from .config import Config, Route
from .errors import ModelNotFound, NoRouteAvailable, Unsupported, quoted
from .thinking import Intent
from .validate import Rejection, check
from .yamlvalues import is_pattern


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._enabled = {alias: tuple(r for r in routes if r.provider.enabled)
                         for alias, routes in config.models.items()}
        self._patterns = [alias for alias in config.models if is_pattern(alias)]

    @property
    def aliases(self) -> list[str]:
        return list(self.config.models)

    def alias(self, model: str) -> str:
        """The alias a client's model name is routed by: itself, or the first pattern it matches
        (itself again when none does: candidates() then answers 404)."""
        if model in self._enabled or not self._patterns:
            return model
        return next((p for p in self._patterns if fnmatchcase(model, p)), model)

    def candidates(self, alias: str) -> tuple[Route, ...]:
        """The enabled routes for ``alias``, in the config's order."""
        routes = self._enabled.get(alias)
        if routes is None:
            raise ModelNotFound(f"model {quoted(alias)} does not exist; available: {', '.join(self.config.models)}",
                                param="model")
        if not routes:
            variables = sorted({r.provider.key_variable for r in self.config.models[alias] if r.provider.key_variable})
            raise NoRouteAvailable(f"model {alias!r} has no enabled provider: set {' or '.join(variables)} "
                                   f"and restart or reload the gateway")
        return routes

    def eligible(self, routes: tuple[Route, ...], body: dict[str, Any], intent: Intent,
                 skipped: list[tuple[str, str]], named: Callable[[str | None], str | None] | None = None
                 ) -> list[Route]:
        """The routes whose documented limits the request keeps; a 400 naming the first breach if none,
        each field as the client sent it (``named``: a front door's name for a chat field). Each
        route skipped is added to ``skipped`` as (provider, param)."""
        taken: list[Route] = []
        rejected: list[tuple[Route, Rejection]] = []
        for route in routes:
            rejection = check(body, intent, route.provider.profile)
            if rejection is None:
                taken.append(route)
            else:
                rejected.append((route, rejection))
                skipped.append((route.provider.name, rejection.param))
        if taken:
            return taken
        first_route, first = rejected[0]
        message = first.message(first_route.provider.name, first_route.provider.profile.limits, named)
        if len(rejected) > 1:
            others = "; ".join(r.message(route.provider.name, route.provider.profile.limits, named)
                               for route, r in rejected[1:])
            message += f". Other routes of {quoted(body['model'])} rejected it too: {others}"
        raise Unsupported(message, param=named(first.param) if named else first.param)
