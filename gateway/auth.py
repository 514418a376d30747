"""Client keys, as a plain ASGI middleware (no BaseHTTPMiddleware on the hot path).

``/v1/*`` needs ``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (Anthropic's clients send
the second) when keys are configured (virtual keys, gateway/keys.py, or GATEWAY_API_KEYS); the
request's Key is left in the scope (``KEY``) for the handler's model, limit and budget checks.
``/admin/*`` needs the admin key, as a bearer token; probes and the scraper (``/healthz``,
``/readyz``, ``/metrics``) need nothing. A refusal comes in the shape of the front door the path
belongs to.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from .doors import door_for
from .errors import Unauthorized
from .keys import KEY, Keys
from .responses import send_error

_CHALLENGE = [(b"www-authenticate", b"Bearer")]
_NO_CLIENT_KEY = Unauthorized("missing or unknown API key: send Authorization: Bearer <key> or x-api-key: <key>")
_NO_ADMIN_KEY = Unauthorized("the admin endpoints need the admin key (GATEWAY_ADMIN_KEY)")

ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


def _bearer(scope: dict[str, Any]) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return _token(value)
    return None


def _token(authorization: bytes) -> str | None:
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _client_key(scope: dict[str, Any]) -> str | None:
    """``x-api-key``, else the bearer token (one pass over the headers)."""
    authorization = None
    for key, value in scope["headers"]:
        if key == b"x-api-key":
            return value.decode("latin-1").strip()
        if key == b"authorization" and authorization is None:
            authorization = value
    return None if authorization is None else _token(authorization)


def _matches(token: str | None, keys: frozenset[str]) -> bool:
    if token is None:
        return False
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


class ClientAuth:
    def __init__(self, app: ASGIApp, *, keys: Callable[[], Keys], admin_key: str,
                 refused: Callable[[dict[str, Any], Unauthorized], None] = lambda scope, error: None) -> None:
        self.app = app
        self.refused = refused  # told of every /v1/* request turned away, for the metrics and the log
        self.keys = keys  # read per request: a reload brings new keys
        self.admin_keys = frozenset({admin_key}) if admin_key else frozenset()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                key = self.keys().find(_client_key(scope))
                if key is None:
                    self.refused(scope, _NO_CLIENT_KEY)
                    body = door_for(path).error_body(_NO_CLIENT_KEY, None)
                    return await send_error(send, _NO_CLIENT_KEY, _CHALLENGE, body)
                scope[KEY] = key
            if path.startswith("/admin/") and not _matches(_bearer(scope), self.admin_keys):
                return await send_error(send, _NO_ADMIN_KEY, _CHALLENGE)
        await self.app(scope, receive, send)

