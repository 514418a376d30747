"""A client's request in chat terms: what a front door's request translation hands the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    chat: dict[str, Any]
    model: str  # the name the client asked for (echoed back; the alias is what routes)
    dropped: list[str] = field(default_factory=list)  # what the door could not translate, by the client's name
    #: chat message index -> the client's path for it (``system``, ``messages[3]``, ``input[2]``);
    #: None: the client sent the chat body itself, and names its fields as the chat route does
    origins: list[str] | None = None
    names: Mapping[str, str] = field(default_factory=dict)  # chat top-level field -> the client's name
    state: Any = None  # what the door's answer needs from the request (a namespace map, a store flag)

    @property
    def translated(self) -> bool:
        return self.origins is not None

    def client_param(self, param: str | None) -> str | None:
        """A chat body's parameter path as the client named it."""
        if param is None or self.origins is None:
            return param
        if param.startswith("messages["):
            index, _, rest = param[len("messages["):].partition("]")
            if index.isdigit() and int(index) < len(self.origins):
                return self.origins[int(index)] + rest
        head, dot, rest = param.partition(".")
        return self.names.get(head, head) + dot + rest

    def add(self, message: dict[str, Any], origin: str) -> None:
        """One more chat message, and where in the client's request it came from."""
        self.chat.setdefault("messages", []).append(message)
        assert self.origins is not None
        self.origins.append(origin)

    def drop(self, name: str) -> None:
        if name not in self.dropped:
            self.dropped.append(name)


def as_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (upstream chunks are read defensively)."""
    return value if isinstance(value, dict) else {}
