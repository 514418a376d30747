"""Alias -> ordered routes, and which of them can take a given request."""

from __future__ import annotations

from typing import Any

from .config import Config, Route
from .errors import ModelNotFound, NoRouteAvailable, Unsupported, quoted
from .thinking import Intent
from .validate import Rejection, check


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._enabled = {alias: tuple(r for r in routes if r.provider.enabled)
                         for alias, routes in config.models.items()}

    @property
    def aliases(self) -> list[str]:
        return list(self.config.models)

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
                 skipped: list[tuple[str, str]]) -> list[Route]:
        """The routes whose documented limits the request keeps; a 400 naming the first breach if none.
        Each route skipped is added to ``skipped`` as (provider, param)."""
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
        message = first.message(first_route.provider.name, first_route.provider.profile.limits)
        if len(rejected) > 1:
            others = "; ".join(r.message(route.provider.name, route.provider.profile.limits)
                               for route, r in rejected[1:])
            message += f". Other routes of {body['model']!r} rejected it too: {others}"
        raise Unsupported(message, param=first.param)
