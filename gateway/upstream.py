"""Send a body to an upstream: the one session, each provider's own connection slots
(:mod:`gateway.pools`), headers, timeouts, and the one place where low-level failures and
upstream error statuses become :mod:`gateway.errors`.

aiohttp is the client: on this machine its pool relays an order of magnitude more requests per
second than httpx's default pool (issue 4, "Speed"; measured in bench/).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs

from . import __version__
from .attempts import Clock
from .config import Provider
from .errors import (
    ContentFiltered,
    PoolExhausted,
    QuotaExhausted,
    UnrequestedEncoding,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .exchange import Attempt
from .pools import Slots

#: Upstream response headers a client gets back (issue 4, "Decisions"); plus each profile's own.
PASSED_BACK = (b"retry-after",)
PASSED_BACK_PREFIX = b"x-ratelimit-"
_ERROR_BODY_LIMIT = 64 * 1024


class Upstream:
    """The process's one upstream session, and each provider's share of its connections."""

    def __init__(self, exhausted: Callable[[str, int, float], None] = lambda provider, connections, waited: None
                 ) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._per_provider: dict[int, tuple[Provider, dict[str, str], aiohttp.ClientTimeout, Slots]] = {}
        self._slots: dict[str, Slots] = {}
        self._exhausted = exhausted  # told (provider, connections, seconds waited) when a pool was full

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        # limit=0: the session counts nothing, each provider's Slots do (a wait in aiohttp's own
        # queue would count as "connect" and charge one provider's stall to another, issue 11).
        # auto_decompress=False: the gateway asks for identity and refuses anything else (post).
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"), cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def configure(self, providers: Iterable[Provider]) -> None:
        """The pool sizes in force (at start and on reload), by provider name: attempts in flight
        keep their slots, and a shrunk pool takes no one new until it is under its new size."""
        for provider in providers:
            slots = self._slots.get(provider.name)
            if slots is None:
                self._slots[provider.name] = Slots(provider.pool.connections)
            else:
                slots.resize(provider.pool.connections)

    def _fixed(self, provider: Provider) -> tuple[dict[str, str], aiohttp.ClientTimeout, Slots]:
        """What every request to ``provider`` carries, built once (a reload brings new Providers)."""
        fixed = self._per_provider.get(id(provider))
        if fixed is None or fixed[0] is not provider:
            headers = {"Authorization": f"Bearer {provider.api_key}", "Content-Type": "application/json",
                       "User-Agent": f"glm-gateway/{__version__}",
                       # said, not left unsaid: without the header any coding is acceptable (RFC 9110, 12.5.3)
                       "Accept-Encoding": "identity"}
            # only the connect timeout is aiohttp's: first byte, idle and total are the Clock's
            timeout = aiohttp.ClientTimeout(total=None, connect=provider.timeout.connect)
            slots = self._slots.get(provider.name)
            if slots is None:  # not configured (a caller without a Config): sized by the provider itself
                slots = self._slots[provider.name] = Slots(provider.pool.connections)
            fixed = self._per_provider[id(provider)] = (provider, headers, timeout, slots)
        return fixed[1], fixed[2], fixed[3]

    def post(self, provider: Provider, body: bytes, *, stream: bool, request_id: str, attempt: Attempt,
             clock: Clock) -> _Post:
        """POST ``body`` to the provider, as ``async with upstream.post(...) as response``: the
        response once its headers arrived, 2xx only. ``attempt.headers`` is set when they arrive,
        whatever the status. A response left early (an error, a timeout, a client gone) is closed,
        never left to linger in the pool. The attempt holds one of the provider's slots from before
        it connects until it is done."""
        return _Post(self, provider, body, stream, request_id, attempt, clock)

    async def _queue(self, provider: Provider, slots: Slots, clock: Clock) -> None:
        """Every slot is busy: queue for one, no longer than ``pool.wait`` nor past the attempt's
        deadlines. The wait is the gateway's, not the upstream's: no timeout of the Clock fires
        during it, and first_byte starts after it."""
        wait = min(provider.pool.wait, clock.hold())
        try:
            got = wait > 0 and await slots.wait(wait)
        finally:
            clock.resume()
        if not got:
            self._exhausted(provider.name, slots.limit, wait)
            raise PoolExhausted(f"{provider.name}: all {slots.limit} of its connections stayed busy for "
                                f"{wait:.3g} s", headers={"retry-after": _RETRY_AFTER})


#: a slot frees as soon as any stream of the provider ends: a second is a fair time to come back
_RETRY_AFTER = "1"


class _Post:
    """One attempt's upstream request as an async context manager. (A class rather than a generator
    under ``asynccontextmanager``: that one's frames and wrappers were a tenth of a JSON request's
    Python bytecode in bench/.) Every low-level failure, in it and in the block it wraps, leaves
    it mapped (:func:`mapped`)."""

    __slots__ = ("_upstream", "_provider", "_body", "_stream", "_request_id", "_attempt", "_clock", "_slots",
                 "_response")

    def __init__(self, upstream: Upstream, provider: Provider, body: bytes, stream: bool, request_id: str,
                 attempt: Attempt, clock: Clock) -> None:
        self._upstream, self._provider, self._body, self._stream = upstream, provider, body, stream
        self._request_id, self._attempt, self._clock = request_id, attempt, clock

    async def __aenter__(self) -> aiohttp.ClientResponse:
        upstream, provider, attempt, clock = self._upstream, self._provider, self._attempt, self._clock
        session = upstream._session
        assert session is not None, "Upstream.start() was not awaited"
        base, timeout, slots = upstream._fixed(provider)
        if not slots.take():
            await upstream._queue(provider, slots, clock)
            attempt.started = time.perf_counter()  # the wait was the gateway's (overhead), not the upstream's ttfb
        self._slots = slots
        try:
            headers = {**base, "Accept": "text/event-stream" if self._stream else "application/json",
                       "X-Request-Id": self._request_id}
            clock.waiting()
            try:
                response = await session.post(provider.url, data=self._body, headers=headers, timeout=timeout,
                                              allow_redirects=False)
            except Exception as exc:
                raise mapped(provider, exc) from None
            self._response = response
            try:
                attempt.headers = time.perf_counter() - attempt.started
                clock.headers = True
                clock.first = clock.first or not self._stream  # a JSON answer's headers are its first byte
                encoding = response.headers.get(hdrs.CONTENT_ENCODING)
                if response.status >= 300:
                    clock.waiting()
                    said = b"" if _encoded(encoding) else await response.content.read(_ERROR_BODY_LIMIT)
                    raise error_for_status(provider, response.status, said, response.raw_headers)
                if _encoded(encoding):
                    raise UnrequestedEncoding(f"{provider.name} answered in Content-Encoding {encoding!r}, "
                                              "which the gateway did not accept (it asks for identity)")
            except BaseException as exc:
                await self._end(exc)
                raise
        except BaseException:
            slots.give_back()
            raise
        return response

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._end(exc)
        finally:
            self._slots.give_back()

    async def _end(self, exc: BaseException | None) -> None:
        """aiohttp's own end of a response (release; wait for the request's writer), closed first
        when it ended with ``exc``; a low-level ``exc`` is raised mapped."""
        response = self._response
        try:
            if exc is not None:
                response.close()
            response.release()
            await response.wait_for_close()
        except Exception as error:
            raise mapped(self._provider, error) from None
        if isinstance(exc, Exception) and not isinstance(exc, UpstreamError):
            raise mapped(self._provider, exc) from None


def _encoded(encoding: str | None) -> bool:
    return encoding is not None and encoding.strip().lower() not in ("", "identity")


def mapped(provider: Provider, exc: Exception) -> UpstreamError:
    """The gateway error for a low-level failure, here and nowhere else; anything else (a bug) is
    raised as it is. (Called in an ``except``: a context manager around each read or request would
    cost more than the mapping.)"""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(f"{provider.name} did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or "connect failed"
        return UpstreamUnavailable(f"{provider.name} could not be reached: {reason}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamUnavailable(f"{provider.name} broke off its response")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamUnavailable(f"{provider.name} failed: {type(exc).__name__}")
    raise exc


def passed_back(provider: Provider, raw: Iterable[tuple[bytes, bytes]], *,
                renamed: bool = False) -> list[tuple[bytes, bytes]]:
    """The upstream headers a client gets back, from the response's raw headers: names lower-cased,
    values the bytes that came. ``renamed``: ``x-ratelimit-*`` as ``x-upstream-ratelimit-*`` (for a
    key with limits of its own the plain names are the gateway's, issue 14)."""
    wanted = _passed_names(provider.profile.pass_headers)
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower.startswith(PASSED_BACK_PREFIX):
            out.append((_renamed(lower) if renamed else lower, value))
        elif lower in wanted:
            out.append((lower, value))
    return out


def upstream_named(headers: dict[str, str]) -> dict[str, str]:
    """An error's passed-back headers (``error_for_status``), renamed as ``passed_back(renamed=True)``
    renames them."""
    named = {}
    for name, value in headers.items():
        raw = name.encode()
        named[_renamed(raw).decode() if raw.startswith(PASSED_BACK_PREFIX) else name] = value
    return named


def _renamed(name: bytes) -> bytes:
    """``x-ratelimit-*`` as ``x-upstream-ratelimit-*``: for a key with limits of its own, the plain
    names are the gateway's (issue 14)."""
    return b"x-upstream-" + name[2:]


@functools.lru_cache(maxsize=64)
def _passed_names(profile_names: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset((*PASSED_BACK, *(name.lower().encode() for name in profile_names)))


def _what_it_said(body: bytes) -> tuple[str, str | None]:
    """The message and code in an upstream's error body, whatever shape its errors take."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500], None
    return said_in(data)


def said_in(data: Any) -> tuple[str, str | None]:
    """The message and code in a parsed error object (an error body, or an SSE error event)."""
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, str):
        return error[:500], None
    if not isinstance(error, dict):
        return str(error)[:500], None
    message = next((error[k] for k in ("message", "msg", "detail") if isinstance(error.get(k), str)), "")
    code = error.get("code", error.get("type"))
    return message[:500] or orjson.dumps(error).decode()[:500], None if code is None else str(code)


def _redacted(provider: Provider, text: str) -> str:
    """An upstream may quote the key it was sent; the client and the logs never see it."""
    return text.replace(provider.api_key, "***") if provider.api_key else text


def stream_error(provider: Provider, event: Any) -> UpstreamError:
    """An error an upstream sent with a 200: an ``{"error": ...}`` event in its stream, or a JSON
    answer that is only an error envelope."""
    message, code = said_in(event)
    said = _redacted(provider, f"{provider.name}: {message}" + (f" (code {code})" if code else ""))
    return QuotaExhausted(said) if code in provider.profile.quota.codes else UpstreamUnavailable(said)


# Statuses by which an upstream says the request itself is wrong (the client may fix it); any other
# 4xx (404: a wrong base_url or model in our config, 405, 409, ...) is the gateway's problem.
_REJECTS_REQUEST = (400, 413, 422)


def error_for_status(provider: Provider, status: int, body: bytes,
                     raw_headers: Iterable[tuple[bytes, bytes]]) -> UpstreamError:
    """An upstream's non-2xx answer -> what the client is told (issue 4, point 6)."""
    message, code = _what_it_said(body)
    message = _redacted(provider, message)
    said = f"{provider.name}: {message}" if message else f"{provider.name} answered {status}"
    back = {name.decode("latin-1"): value.decode("utf-8", "replace")
            for name, value in passed_back(provider, raw_headers)}
    content_filter = provider.profile.content_filter
    if content_filter and status == content_filter.status and (
            code in content_filter.codes
            or any(p in message.lower().replace("_", " ") for p in content_filter.phrases)):
        return ContentFiltered(said, headers=back)
    quota = provider.profile.quota
    if status in quota.statuses or code in quota.codes:
        return QuotaExhausted(f"{provider.name} says the account has no balance left ({status}): {message}",
                              headers=back)
    if status == 429:
        error: UpstreamError = UpstreamRateLimited(said, headers=back)
        error.retry_after = _seconds(back.get("retry-after"))
        return error
    if status in _REJECTS_REQUEST:
        return UpstreamRejected(said, headers=back)
    if status == 408:
        return UpstreamTimeout(f"{provider.name} timed out ({status}): {message}", headers=back)
    if 300 <= status < 400:
        error = UpstreamUnavailable(f"{provider.name} answered a redirect ({status}); redirects are not followed")
    elif status in (401, 403):
        error = UpstreamUnavailable(f"{provider.name} refused the gateway's credentials ({status}): {message}",
                                    headers=back)
    else:
        error = UpstreamUnavailable(f"{provider.name} failed ({status}): {message}", headers=back)
        error.retry_after = _seconds(back.get("retry-after")) if status == 503 else None
    # 500, 502, 503, 504 and 529 (overloaded, sent like a 503) may pass; our key, a wrong URL may not
    error.retry_same = status in _RETRIED
    return error


_RETRIED = frozenset({500, 502, 503, 504, 529})


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (the delay form; an HTTP date is read as "no advice")."""
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None
