"""A request against one profile's documented limits -> the first limit it breaks, or None.

Each rejection names the field the client sent (``param``), the provider, the limit, and the doc
line the limit comes from. Nothing here changes the request: rewriting is ``rewrite.py``'s job, and
whatever it will fix (a string ``stop`` for an array-only upstream, text parts for a string-only
one, the ``developer`` role) is not a rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import led_by, quoted
from .profiles import Limits, Profile
from .thinking import Intent


@dataclass(frozen=True, slots=True)
class Rejection:
    param: str
    problem: str  # "temperature 1.5 is outside [0, 1]"
    limit: str  # the Limits field that was broken

    def message(self, provider: str, limits: Limits, named: Callable[[str | None], str | None] | None = None) -> str:
        """The problem for ``provider``, with the limit's doc line. ``named``: a front door's name
        for a chat field, which then leads the message (a door's envelope may have no ``param``)."""
        doc = limits.docs.get(self.limit)
        problem = self.problem
        name = named(self.param) if named is not None else None
        if name is not None:
            problem = led_by(name, self.param, problem)
        return f"{problem} for {provider}" + (f" ({doc})" if doc else "")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _range(body: dict[str, Any], param: str, limit: str, bounds: tuple[float, float] | None,
           value: Any = None) -> Rejection | None:
    value = body.get(param) if value is None else value
    if bounds is None or value is None:
        return None
    low, high = bounds
    if low <= value <= high:
        return None
    return Rejection(param, f"{param} {value} is outside [{_fmt(low)}, {_fmt(high)}]", limit)


def _sampling(body: dict[str, Any], intent: Intent, profile: Profile) -> Rejection | None:
    limits = profile.limits
    max_param = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    budget, budget_param = intent.budget_for(profile.thinking)
    return (_range(body, "temperature", "temperature", limits.temperature)
            or _range(body, "top_p", "top_p", limits.top_p)
            or _range(body, "min_p", "min_p", limits.min_p)
            or _range(body, max_param, "max_tokens", limits.max_tokens)
            or (_range(body, budget_param, "thinking_budget", limits.thinking_budget, budget)
                if budget_param and profile.thinking.budget_field else None))


def _stop(body: dict[str, Any], limits: Limits) -> Rejection | None:
    stop = body.get("stop")
    if stop is None or limits.stop_max is None:
        return None
    count = 1 if isinstance(stop, str) else len(stop)
    if count <= limits.stop_max:
        return None
    return Rejection("stop", f"stop has {count} sequences, more than the {limits.stop_max} allowed", "stop_max")


def _messages(body: dict[str, Any], profile: Profile) -> Rejection | None:
    limits = profile.limits
    messages: list[dict[str, Any]] = body["messages"]
    if limits.messages_min is not None and len(messages) < limits.messages_min:
        return Rejection("messages", f"messages has {len(messages)} items, fewer than {limits.messages_min}",
                         "messages_min")
    if limits.messages_max is not None and len(messages) > limits.messages_max:
        return Rejection("messages", f"messages has {len(messages)} items, more than {limits.messages_max}",
                         "messages_max")
    user_turn = False
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "developer" and not profile.developer_role:
            role = "system"  # rewritten, not rejected
        user_turn = user_turn or role not in ("system", "assistant")
        if limits.roles is not None and role not in limits.roles:
            return Rejection(f"messages[{i}].role",
                             f"role {quoted(role)} is not one of {', '.join(sorted(limits.roles))}", "roles")
        if role == "tool" and limits.tool_message_needs_id and not message.get("tool_call_id"):
            return Rejection(f"messages[{i}].tool_call_id", "a tool message needs a tool_call_id",
                             "tool_message_needs_id")
        content = message.get("content")
        if isinstance(content, list):
            allowed = frozenset({"text"}) if limits.content_string_only else limits.content_parts
            for part in content:
                if allowed is not None and part["type"] not in allowed:
                    limit = "content_string_only" if limits.content_string_only else "content_parts"
                    return Rejection(f"messages[{i}].content",
                                     f"content part {quoted(part['type'])} is not accepted "
                                     f"(accepted: {', '.join(sorted(allowed))})", limit)
    if limits.needs_user_turn and not user_turn:
        return Rejection("messages", "messages need at least one message that is not system or assistant",
                         "needs_user_turn")
    return None


def _tools(body: dict[str, Any], limits: Limits) -> Rejection | None:
    tools = body.get("tools")
    if tools:
        if limits.tools_max is not None and len(tools) > limits.tools_max:
            return Rejection("tools", f"tools has {len(tools)} items, more than {limits.tools_max}", "tools_max")
        if limits.tool_types is not None:
            for i, tool in enumerate(tools):
                if tool.get("type") not in limits.tool_types:
                    return Rejection(f"tools[{i}].type", f"tool type {quoted(tool.get('type'))} is not one of "
                                     f"{', '.join(sorted(limits.tool_types))}", "tool_types")
    choice = body.get("tool_choice")
    if choice is not None and limits.tool_choice is not None and (
            not isinstance(choice, str) or choice not in limits.tool_choice):
        shown = choice if isinstance(choice, str) else "an object"
        return Rejection("tool_choice", f"tool_choice {quoted(shown)} is not one of "
                         f"{', '.join(sorted(limits.tool_choice))}", "tool_choice")
    return None


def check(body: dict[str, Any], intent: Intent, profile: Profile) -> Rejection | None:
    return (_sampling(body, intent, profile) or _stop(body, profile.limits) or _messages(body, profile)
            or _tools(body, profile.limits))
