"""Provider health: outlier ejection, as Envoy's outlier detection does it.

A provider whose attempts fail ``consecutive`` times in a row, or whose last ``window`` attempts
failed at least ``rate`` of the time (Envoy's failure percentage: a provider that fails every
other request never fails five in a row), is ejected for ``cooldown`` seconds;
when the cool-down ends it is back in rotation and the next live request probes it. Only failures
of the provider count (connect errors, resets, timeouts, 5xx, error-in-200, an answer too large or
in a coding the gateway refused): a 429 is answered by Retry-After and fallback, a client-caused
4xx says nothing about the provider (issue 10), and a full pool (``pool_exhausted``) is the
gateway's own capacity: the provider was never asked (issue 11).

This is the one health model: ``gateway_provider_up`` is 1 exactly when a provider is enabled and
not ejected. The counts are per process; with a shared state (Redis) each ejection is shared, so
that a provider one replica ejected is skipped by all (:mod:`gateway.shared_health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: Attempt outcomes that are the provider's failure; "ok" is its success; anything else is neither.
FAILURES = frozenset({"upstream_error", "upstream_timeout", "quota_exhausted", "upstream_too_large",
                      "upstream_encoding"})


@dataclass(slots=True)
class _State:
    window: int
    failures: int = 0  # consecutive
    ejected_until: float = 0.0  # time.monotonic(); 0: in rotation
    recent: deque[bool] = field(init=False)  # the last attempts' failed-or-not, newest last

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.window)


class Health:
    def __init__(self, *, consecutive: int = 5, cooldown: float = 30.0, window: int = 20, rate: float = 0.5,
                 changed: Callable[[str, bool], None] = lambda provider, up: None,
                 ejected_here: Callable[[str, float], None] = lambda provider, seconds: None,
                 recovered_here: Callable[[str], None] = lambda provider: None) -> None:
        self.consecutive = consecutive
        self.cooldown = cooldown
        self.window, self.rate = window, rate
        self._changed = changed  # told (provider, up) whenever a provider is ejected or back
        self._ejected_here = ejected_here  # told (provider, seconds) of this process's own ejections
        self._recovered_here = recovered_here  # told of an ejected provider a try here found answering
        self._states: dict[str, _State] = {}

    def ejected(self, provider: str) -> bool:
        state = self._states.get(provider)
        return state is not None and state.ejected_until > time.monotonic()

    def down(self) -> list[str]:
        return [name for name in self._states if self.ejected(name)]

    def record(self, provider: str, outcome: str) -> None:
        """One attempt's outcome. While a provider is ejected its failures are not counted (the
        count starts afresh when it is back); a success (a panic-routed try) brings it back at once."""
        state = self._states.get(provider)
        if outcome == "ok":
            if state is None:
                state = self._states[provider] = _State(self.window)
            state.failures = 0
            state.recent.append(False)
            if state.ejected_until:
                state.ejected_until = 0.0
                self._changed(provider, True)
                self._recovered_here(provider)
            return
        if outcome not in FAILURES:
            return
        if state is None:
            state = self._states[provider] = _State(self.window)
        if self.ejected(provider):
            return
        state.failures += 1
        state.recent.append(True)
        failing = len(state.recent) == self.window and sum(state.recent) >= self.rate * self.window
        if state.failures >= self.consecutive or failing:
            self._eject(provider, state, self.cooldown)
            self._ejected_here(provider, self.cooldown)

    def adopt(self, provider: str, seconds: float) -> None:
        """Another replica ejected ``provider`` (shared state, issue 14): skipped here too, for
        what is left of its cool-down."""
        if self.ejected(provider) or seconds <= 0:
            return
        state = self._states.get(provider)
        if state is None:
            state = self._states[provider] = _State(self.window)
        self._eject(provider, state, seconds)

    def _eject(self, provider: str, state: _State, seconds: float) -> None:
        state.failures = 0
        state.recent.clear()
        state.ejected_until = time.monotonic() + seconds
        self._changed(provider, False)
        with contextlib.suppress(RuntimeError):  # no loop (a synchronous caller): read lazily
            asyncio.get_running_loop().call_later(seconds, self._back, provider, state.ejected_until)

    def _back(self, provider: str, until: float) -> None:
        state = self._states.get(provider)
        if state is not None and state.ejected_until == until:  # not ended early, nor ejected again since
            state.ejected_until = 0.0
            self._changed(provider, True)
