"""Front doors: the APIs clients speak, each a pair of pure translations around the one pipeline.

A door turns its request into a chat body before routing (so every documented limit, dialect
rewrite, fallback and metric applies unchanged), and turns the chat answer, or each parsed chunk
of a chat stream, into its own answer. The chat door is the identity: its answers go out as the
upstream's bytes, untouched (issue 12, "Shape"). A door is known from the path alone, before
the key check, so that even a 401 or a 413 comes in the door's own error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from .. import request as request_body
from ..background import Background
from ..errors import GatewayError, InvalidRequest, SharedStateUnavailable
from ..state import SharedStateDown
from . import messages_answer, messages_request, responses_answer, responses_request
from .responses_store import ResponseStore, StoredResponses, made_here, new_response_id
from .translated import Request

__all__ = ["CHAT", "DOORS", "MESSAGES", "RESPONSES", "Door", "Events", "Request", "door_for"]


class Events(Protocol):
    """A door's stream: the events (without terminators) each chat chunk causes, and its end."""

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...

    def error(self, error: GatewayError) -> bytes: ...


class Door(Protocol):
    name: str  # the ``frontdoor`` label of metrics and log lines
    #: seconds of upstream silence after which a started stream gets a keep-alive event (None: never)
    ping_after: float | None
    ping: bytes

    async def parse(self, raw: bytes, owner: str) -> Request:
        """The client's request in chat terms (``owner``: the name of the key that sent it)."""
        ...

    def error_body(self, error: GatewayError, request_id: str | None) -> bytes: ...

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]: ...

    def answer(self, answer: dict[str, Any], body: bytes, request: Request, request_id: str) -> bytes: ...

    def events(self, request: Request, request_id: str) -> Events | None: ...


class Chat:
    """``/v1/chat/completions``: OpenAI's own shape, relayed as it came."""

    name = "chat"
    ping_after: float | None = None
    ping = b""

    async def parse(self, raw: bytes, owner: str) -> Request:
        body = request_body.load(raw)
        return Request(body, body["model"])

    def error_body(self, error: GatewayError, request_id: str | None) -> bytes:
        return error.body()

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        return [(b"x-request-id", request_id.encode())]

    def answer(self, answer: dict[str, Any], body: bytes, request: Request, request_id: str) -> bytes:
        return body

    def events(self, request: Request, request_id: str) -> Events | None:
        return None  # the upstream's events go out as they are


class Messages:
    """``/v1/messages``: Anthropic's Messages API, for Claude Code and the Anthropic SDKs."""

    name = "messages"
    ping_after: float | None = 10.0
    ping = messages_answer.PING

    async def parse(self, raw: bytes, owner: str) -> Request:
        return messages_request.to_chat(request_body.parse(raw))

    def error_body(self, error: GatewayError, request_id: str | None) -> bytes:
        return orjson.dumps(messages_answer.error_envelope(error, request_id))

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        value = request_id.encode()
        return [(b"x-request-id", value), (b"request-id", value)]

    def answer(self, answer: dict[str, Any], body: bytes, request: Request, request_id: str) -> bytes:
        return orjson.dumps(messages_answer.message(answer, request.model, request_id))

    def events(self, request: Request, request_id: str) -> Events | None:
        return messages_answer.MessageEvents(request.model, request_id)


class Responses(Chat):
    """``/v1/responses``: OpenAI's Responses API, for Codex CLI and the Agents SDK. Errors before a
    stream starts are the chat route's (OpenAI's envelope); stored responses live in ``store``."""

    name = "responses"

    def __init__(self) -> None:
        self.store: StoredResponses = ResponseStore()  # or the shared state (app.py)
        self.ttl = 3600.0  # GATEWAY_RESPONSES_TTL
        self.shared_by_workers = False  # under --workers N without Redis each worker has its own store
        self.lost: Callable[[BaseException], None] = lambda error: None  # a Response the store failed to keep
        self._writes = Background(lambda error: self.lost(error))

    async def parse(self, raw: bytes, owner: str) -> Request:
        body = request_body.parse(raw)
        previous = None
        previous_id = body.get("previous_response_id")
        if previous_id is not None:
            stored = await self.stored(previous_id, owner) if isinstance(previous_id, str) else None
            if stored is None:
                raise InvalidRequest(self._unknown(previous_id), param="previous_response_id")
            previous = orjson.loads(stored[1])
        request = responses_request.to_chat(body, previous)
        request.state.id, request.state.owner = new_response_id(), owner
        return request

    async def stored(self, response_id: str, owner: str) -> tuple[bytes, bytes] | None:
        """A stored Response and its conversation, if ``owner`` has one by that id."""
        try:
            return await self.store.get_response(response_id, owner)
        except SharedStateDown:
            raise _NO_STORE from None

    async def forget(self, response_id: str, owner: str) -> bool:
        try:
            return await self.store.delete_response(response_id, owner)
        except SharedStateDown:
            raise _NO_STORE from None

    def _unknown(self, previous_id: object) -> str:
        shown = str(previous_id)[:80]
        if isinstance(previous_id, str) and self.shared_by_workers and not made_here(previous_id):
            return (f"previous_response_id {shown!r} was stored by another worker process of this gateway "
                    "(stored responses live in the worker that made them; run one worker to chain them)")
        return f"previous_response_id {shown!r} is unknown or has expired"

    def answer(self, answer: dict[str, Any], body: bytes, request: Request, request_id: str) -> bytes:
        response, turn = responses_answer.response(answer, request.model, request.state)
        self._keep(request, response, turn)
        return orjson.dumps(response)

    def events(self, request: Request, request_id: str) -> Events | None:
        return responses_answer.ResponseEvents(request.state, request.model,
                                               lambda response, turn: self._keep(request, response, turn))

    def _keep(self, request: Request, response: dict[str, Any], turn: dict[str, Any]) -> None:
        if not request.state.store:
            return
        assert request.origins is not None
        said = [m for m, origin in zip(request.chat["messages"], request.origins, strict=True)
                if origin != "instructions"]  # a later request's instructions replace these
        # Written while the answer goes out: the write is on its way before the client can read the
        # answer and ask for the next turn, on this replica or another.
        self._writes.run(self.store.put_response(
            response["id"], request.state.owner, orjson.dumps(response), orjson.dumps([*said, turn]), self.ttl))

    async def flush(self) -> None:
        """The Responses still being written, kept before the process goes."""
        await self._writes.wait()


_NO_STORE = SharedStateUnavailable("stored responses are in the shared state (Redis), which does not answer")

CHAT: Door = Chat()
MESSAGES: Door = Messages()
RESPONSES = Responses()
#: path -> its door
DOORS: dict[str, Door] = {"/v1/chat/completions": CHAT, "/v1/messages": MESSAGES, "/v1/responses": RESPONSES}


def door_for(path: str) -> Door:
    """The door whose error shape a path answers in: its own, under it (``/v1/messages/count_tokens``),
    else OpenAI's."""
    door = DOORS.get(path)
    if door is None:
        door = next((d for p, d in DOORS.items() if path.startswith(p + "/")), CHAT)
    return door
