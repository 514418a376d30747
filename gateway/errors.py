"""Every error the gateway answers with, and the OpenAI envelope it is answered in.

The tree::

    GatewayError                       status  type / code
    ├── ClientError                    4xx     the client can fix it
    │   ├── InvalidRequest             400     invalid_request_error
    │   ├── Unsupported                400     invalid_request_error / unsupported_by_provider
    │   ├── Unauthorized               401     authentication_error / invalid_api_key
    │   ├── ModelNotFound              404     invalid_request_error / model_not_found
    │   ├── PayloadTooLarge            413     invalid_request_error / payload_too_large
    │   ├── RequestTimeout             408     invalid_request_error / request_timeout  (connections.py)
    │   ├── HeadersTooLarge            431     invalid_request_error / headers_too_large  (connections.py)
    │   └── KeyRefusal                         what a virtual key may not do (issue 14); ``reason`` says which
    │       ├── ModelNotAllowed        403     permission_error / model_not_allowed
    │       ├── RateLimitExceeded      429     requests or tokens / rate_limit_exceeded; Retry-After
    │       └── BudgetExceeded         429     insufficient_quota / budget_exceeded; Retry-After
    ├── InternalError                  500     server_error / internal_error (a bug of ours)
    ├── NoRouteAvailable               503     service_unavailable / provider_disabled
    ├── SharedStateUnavailable         503     service_unavailable / shared_state_unavailable (Redis, fail closed)
    ├── TooManyConnections             503     service_unavailable / too_many_connections  (connections.py)
    └── UpstreamError                          what an upstream said or did, mapped once
        ├── UpstreamRejected           400     the upstream refused the request as invalid
        ├── ContentFiltered            400     code content_filter
        ├── UpstreamRateLimited        429     Retry-After kept
        ├── UpstreamUnavailable        502     5xx, connect failure, reset, error-in-200, our key refused
        ├── QuotaExhausted             502     code quota_exhausted: the account has no balance
        ├── UpstreamTooLarge           502     code upstream_too_large: a JSON answer past GATEWAY_MAX_UPSTREAM_BYTES
        ├── UnrequestedEncoding        502     code upstream_encoding: a Content-Encoding the gateway refused
        ├── PoolExhausted              503     code pool_exhausted: the provider's connections all busy; Retry-After
        └── UpstreamTimeout            504

An UpstreamError says what may follow it: ``retryable`` (another route may answer: fall back) and
``retry_same`` (the same provider may answer a second try: retry it, issue 10).

The envelope is OpenAI's: ``{"error": {"message", "type", "param", "code"}}``; the Messages front
door renders the same errors, status for status, in Anthropic's (``gateway/doors``). Messages never
carry a stack trace or a key: they are built from the request and from what the upstream said.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    code = "invalid_request"


class Unsupported(ClientError):
    """A request that breaks a documented limit of every route it could take."""

    code = "unsupported_by_provider"


class Unauthorized(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class KeyRefusal(ClientError):
    #: the bounded word for ``gateway_key_rejections_total``: model, requests, tokens, concurrency, budget
    reason = "model"


class ModelNotAllowed(KeyRefusal):
    """The key may not use the model: a permission, said as one."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class RateLimitExceeded(KeyRefusal):
    """A key's requests, tokens or concurrency limit; ``type`` says which, as OpenAI's does."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.type = "tokens" if reason == "tokens" else "requests"


class BudgetExceeded(KeyRefusal):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"
    reason = "budget"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


# Answered by the connection guard (gateway/connections.py), before or instead of the app.
class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class HeadersTooLarge(ClientError):
    status = 431
    code = "headers_too_large"


class TooManyConnections(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "too_many_connections"


class SharedStateUnavailable(GatewayError):
    """Redis is unreachable and ``GATEWAY_REDIS_FAIL=closed``: no request goes unlimited."""

    status = 503
    type = "service_unavailable"
    code = "shared_state_unavailable"


class InternalError(GatewayError):
    code = "internal_error"


class NoRouteAvailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "provider_disabled"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"
    #: A later route may still answer: the failure was the upstream's, not the request's.
    retryable = True
    #: The same provider may answer if asked again (a 5xx, a reset, a timeout; not our key refused).
    retry_same = True
    #: Seconds the upstream asked us to wait (Retry-After), if it said.
    retry_after: float | None = None


class UpstreamRejected(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"
    retryable = retry_same = False


class ContentFiltered(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "content_filter"
    retryable = retry_same = False


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class UpstreamUnavailable(UpstreamError):
    pass


class QuotaExhausted(UpstreamError):
    code = "quota_exhausted"
    retry_same = False


class UpstreamTooLarge(UpstreamError):
    """The same request would get the same answer: the next route, not a second try."""

    code = "upstream_too_large"
    retry_same = False


class UnrequestedEncoding(UpstreamError):
    """A Content-Encoding the gateway did not accept: decoding it would be a bomb's way in."""

    code = "upstream_encoding"
    retry_same = False


class PoolExhausted(UpstreamError):
    """Every connection of the provider's pool stayed busy for its ``pool.wait``: the gateway's
    own capacity, not the provider's failure (never counted toward its health). The next route is
    tried; a second try here would only wait in the same queue."""

    status = 503
    type = "service_unavailable"
    code = "pool_exhausted"
    retry_same = False


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


#: Outcomes that are not errors answered to anyone: the client left (nginx's 499), or the gateway
#: cut a stream at the end of its shutdown grace.
CLIENT_CLOSED, CLIENT_CLOSED_STATUS = "client_closed", 499
SHUTDOWN = "shutdown"


def _codes() -> dict[str, int]:
    """Every error code the gateway answers with -> its status: the bounded values of the metrics'
    ``code`` and ``outcome`` labels."""
    codes: dict[str, int] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.code is not None:
            codes.setdefault(cls.code, cls.status)
    codes.update({CLIENT_CLOSED: CLIENT_CLOSED_STATUS, SHUTDOWN: 503, "invalid_config": 400})
    return codes


CODES = _codes()
_UPSTREAM: list[type[UpstreamError]] = [UpstreamError, *UpstreamError.__subclasses__()]
UPSTREAM_CODES = tuple(sorted({cls.code for cls in _UPSTREAM if cls.code}))


def bounded(text: str, limit: int = 256) -> str:
    """A client's string as it may appear in an error, a log line or a metric: at most ``limit``
    characters, then an ellipsis and the full length (issue 11, point 7: a 9 MiB ``model`` came
    back whole in the 404 and wrote a 9 MB log line)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def led_by(name: str, param: str, text: str) -> str:
    """``text`` about the chat field ``param``, led by ``name``, the client's own name for it (a
    front door's envelope may carry no ``param``)."""
    return name + text[len(param):] if text.startswith(param) else f"{name}: {text}"


def quoted(value: object, limit: int = 256) -> str:
    """``repr(value)``, bounded: how an error message quotes what the client sent."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    return bounded(repr(value), limit)
