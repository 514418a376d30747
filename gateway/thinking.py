"""The client's thinking forms -> one intent -> the upstream's own form.

Clients ask for thinking in three ways: ``thinking: {"type": ...}``, ``enable_thinking`` +
``thinking_budget``, and OpenAI's ``reasoning_effort``. They are read into one
:class:`Intent`; a profile's :class:`ThinkingDialect` (profiles/thinking.yaml) says how that intent
is written for its upstream. Forms that disagree are a client error (issue 4, "Decisions").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest
from .profiles import ThinkingDialect

FIELDS = ("thinking", "enable_thinking", "thinking_budget", "reasoning_effort")
MODES = ("enabled", "disabled", "auto")
EFFORT_MODES = {"none": "disabled", "minimal": "disabled", "low": "enabled", "medium": "enabled", "high": "enabled"}


@dataclass(frozen=True, slots=True)
class Intent:
    mode: str | None = None  # enabled | disabled | auto | None: the client said nothing
    budget: int | None = None  # the client's thinking_budget
    effort: str | None = None  # the client's reasoning_effort
    sent: tuple[str, ...] = ()  # which thinking fields the client sent

    def budget_for(self, dialect: ThinkingDialect) -> tuple[int | None, str | None]:
        """The budget to send and the client field it comes from."""
        if self.budget is not None:
            return self.budget, "thinking_budget"
        if self.mode == "enabled" and self.effort is not None and self.effort in dialect.effort_budgets:
            return dialect.effort_budgets[self.effort], "reasoning_effort"
        return None, None


NO_INTENT = Intent()


def read_intent(body: dict[str, Any]) -> Intent:
    sent = tuple(f for f in FIELDS if body.get(f) is not None)
    if not sent:
        return NO_INTENT
    said: dict[str, str] = {}  # form -> the mode it asks for
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or thinking.get("type") not in MODES:
            raise InvalidRequest(
                f"thinking must be an object with type one of {', '.join(MODES)}", param="thinking.type")
        said[f"thinking.type={thinking['type']}"] = thinking["type"]
    enable = body.get("enable_thinking")
    if enable is not None:
        if not isinstance(enable, bool):
            raise InvalidRequest("enable_thinking must be true or false", param="enable_thinking")
        said[f"enable_thinking={'true' if enable else 'false'}"] = "enabled" if enable else "disabled"
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORT_MODES:
            raise InvalidRequest(
                f"reasoning_effort must be one of {', '.join(EFFORT_MODES)}", param="reasoning_effort")
        said[f"reasoning_effort={effort}"] = EFFORT_MODES[effort]
    budget = body.get("thinking_budget")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)):
        raise InvalidRequest("thinking_budget must be an integer", param="thinking_budget")
    modes = set(said.values())
    if len(modes) > 1:
        raise InvalidRequest(
            f"thinking forms disagree: {', '.join(said)}; send one of them", param=sent[0])
    return Intent(mode=modes.pop() if modes else None, budget=budget, effort=effort, sent=sent)


def render(intent: Intent, dialect: ThinkingDialect, client_body: dict[str, Any],
           switchable: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The fields to send for ``intent`` in ``dialect``, and the client fields that could not go.

    A client's own object for a field the dialect also uses (``thinking: {"type": ..., ...}``)
    keeps its other keys: only what the dialect sets is overwritten. ``switchable`` False: the
    upstream model takes no on/off switch (its page lists the models that do), only a budget.
    """
    if not intent.sent:
        return {}, []
    if not dialect.controls:
        return {}, list(intent.sent)
    fields: dict[str, Any] = {}
    dropped: list[str] = []
    if intent.mode is not None and not switchable:
        dropped += [f for f in intent.sent if f != "thinking_budget"]
    elif intent.mode is not None:
        for name, value in getattr(dialect, intent.mode).items():
            mine = client_body.get(name)
            fields[name] = {**mine, **value} if isinstance(mine, dict) and isinstance(value, dict) else value
    budget, _ = intent.budget_for(dialect)
    if budget is not None:
        if dialect.budget_field:
            fields[dialect.budget_field] = budget
        elif intent.budget is not None:
            dropped.append("thinking_budget")
    if switchable and intent.mode == "enabled" and intent.effort is not None and not dialect.effort_budgets:
        dropped.append("reasoning_effort")  # the level itself has no field here
    return fields, dropped
