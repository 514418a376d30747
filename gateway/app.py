"""The ASGI app: endpoints, middleware, and the lifespan that owns the one upstream pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Route

from . import config as config_file
from .accesslog import AccessLog
from .admission import KeyLimits
from .attempts import RetryBudget
from .auth import ClientAuth
from .config import Config, ConfigError
from .connections import LIMITS, REFUSED, Limits
from .doors import DOORS, RESPONSES, door_for
from .doors.responses_store import ResponseStore
from .errors import GatewayError, InvalidRequest, ModelNotFound, quoted
from .exchange import Exchange
from .handler import Handler
from .health import Health
from .intake import new_id
from .keys import Keys, key_of
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics, exposition
from .routing import Router
from .settings import SUPERVISED, Settings
from .shared_health import SharedHealth
from .shutdown import Drain
from .upstream import Upstream

if TYPE_CHECKING:
    from .state.redis import RedisState


class Gateway:
    """The process's state: settings, the routing table in force, the upstream pool, and what
    hears about each request (metrics, access log)."""

    def __init__(self, settings: Settings, config: Config) -> None:
        self.settings = settings
        self.upstream = Upstream(exhausted=self._pool_exhausted)
        self.access_log = AccessLog(settings.log_level)
        self.metrics = Metrics()
        self._refusals = Throttle(per_second=5)
        self._full_pools: dict[str, Throttle] = {}
        self._client_refusals: dict[str, Throttle] = {}  # one per reason: a flood of one hides no other
        shared = _shared_state(settings)
        self.health = Health(consecutive=settings.eject_after, cooldown=settings.eject_seconds,
                             window=settings.eject_window, rate=settings.eject_rate,
                             changed=self._health_changed, ejected_here=self._ejected_here,
                             recovered_here=self._recovered_here)
        self.shared_health = SharedHealth(self.health, shared) if shared is not None else None
        self.shared = shared
        self.limits = KeyLimits(shared, fail=settings.redis_fail, lease_ttl=settings.lease_ttl,
                                default_estimate=settings.token_estimate, up=self.metrics.shared_state,
                                told=lambda event, fields: self.access_log.event(event, level="warning", **fields))
        self._use(config)

    def _use(self, config: Config) -> None:
        self.router = Router(config)  # requests in flight keep the router they started with
        self.keys = Keys(config.keys, self.settings.client_keys)
        self.upstream.configure(config.providers.values())
        self.loaded_at = int(time.time())
        providers = config.providers.values()
        self.metrics.configure({alias: [r.provider.name for r in routes] for alias, routes in config.models.items()},
                               {p.name: p.enabled for p in providers},
                               ejected=[p.name for p in providers if self.health.ejected(p.name)],
                               keys=self.keys.names)

    def _health_changed(self, provider: str, up: bool) -> None:
        self.metrics.health_changed(provider, up)
        if up:
            self.access_log.event("provider_back", provider=provider)
        else:
            self.access_log.event("provider_ejected", level="warning", provider=provider, seconds=self.health.cooldown)

    def _ejected_here(self, provider: str, seconds: float) -> None:
        if self.shared_health is not None:
            self.shared_health.ejected_here(provider, seconds)

    def _recovered_here(self, provider: str) -> None:
        if self.shared_health is not None:
            self.shared_health.recovered_here(provider)

    def _pool_exhausted(self, provider: str, connections: int, waited: float) -> None:
        """A line naming the provider whose pool was full, at most one a second for each: a full
        pool is a burst of them (each attempt's own line says it too)."""
        throttle = self._full_pools.get(provider)
        if throttle is None:
            throttle = self._full_pools[provider] = Throttle(per_second=1)
        if throttle.allows():
            self.access_log.event("pool_exhausted", level="warning", provider=provider, connections=connections,
                                  waited_s=round(waited, 3))

    def reload(self, *, count_success: bool = True) -> str | None:
        """Re-read the config file; an invalid one is refused (and counted) and the old table keeps
        serving. Returns the problem, or None when the new table is in force. (Under --workers the
        supervisor counts the reload it then makes of every worker: ``count_success=False``.)"""
        try:
            config = config_file.load(self.settings.config)
        except ConfigError as exc:
            self.access_log.event("reload_rejected", level="warning", error=str(exc))
            self.metrics.reloaded(False)
            return str(exc)
        if count_success:
            self.metrics.reloaded(True)
        self._use(config)
        self.access_log.event("reloaded", config=config.path, models=len(config.models),
                              disabled=[p.name for p in config.providers.values() if not p.enabled])
        return None

    def started(self) -> None:
        self.metrics.started()

    def finished(self, exchange: Exchange) -> None:
        self.metrics.finished(exchange)
        self.access_log.request(exchange)

    def refused(self, scope: dict[str, Any], error: GatewayError) -> None:
        """A request the key check turned away: counted like any other (issue 9, point 2) and
        logged, at most a few lines a second (a flood of bad keys must not become one of log lines)."""
        exchange = Exchange(request_id=new_id(), status=error.status, error_code=error.code,
                            frontdoor=door_for(scope["path"]).name)
        try:
            self.metrics.record(exchange, timed=False)
            if self._refusals.allows():
                self.access_log.request(exchange)
        except Exception as exc:  # the 401 must still go out
            self.failed(exchange, exc)

    def client_refused(self, reason: str, client: str) -> None:
        """A connection the connection guard refused or cut (gateway/connections.py): counted, and
        logged at most a few lines a second per reason, with how many went unlogged since."""
        self.metrics.client_refused(reason)
        throttle = self._client_refusals.get(reason)
        if throttle is None:
            throttle = self._client_refusals[reason] = Throttle(per_second=5)
        if throttle.allows():
            self.access_log.event("client_refused", level="warning", reason=reason, client=client,
                                  unlogged=throttle.denied)
            throttle.denied = 0
        else:
            throttle.denied += 1

    def failed(self, exchange: Exchange, error: Exception) -> None:
        self.access_log.event("internal_error", level="error", request_id=exchange.request_id,
                              error=type(error).__name__)


class Throttle:
    """At most ``per_second`` events in any second-long window starting at the first of them."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._window = 0.0
        self._count = 0
        self.denied = 0  # kept by the caller: events not allowed since the last one that was

    def allows(self) -> bool:
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        self._count += 1
        return self._count <= self.per_second


def _error_response(error: GatewayError, path: str = "") -> Response:
    """The error in the shape of the front door ``path`` belongs to (OpenAI's by default)."""
    return Response(door_for(path).error_body(error, None), status_code=error.status, headers=error.headers,
                    media_type="application/json")


class FrontDoors:
    """``POST`` to a front door's path (``/v1/chat/completions``, ``/v1/messages``) straight to its
    handler, everything else to FastAPI.

    The hot path skips FastAPI's own stack (error, telemetry, body-limit, exception and exit-stack
    layers, each wrapping ``send``): profiled under load in bench/ at about a sixth of a request's CPU.
    """

    def __init__(self, handlers: dict[str, Handler], app: FastAPI) -> None:
        self.handlers = handlers
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.handlers.get(scope["path"])
            if handler is not None:
                return await handler(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> ClientAuth:
    settings = settings or Settings()
    gateway = Gateway(settings, config_file.load(settings.config))
    drain = Drain(settings.shutdown_delay, lambda: gateway.access_log.event(
        "draining", level="warning", seconds=settings.shutdown_delay, grace=settings.shutdown_grace))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await gateway.upstream.start()
        gateway.limits.start()
        if gateway.shared_health is not None:
            gateway.shared_health.start()
        drain.install()
        # Start-up objects (modules, config, profiles) never die: out of the collector's sight, a
        # full collection under load walks only what requests allocate.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread (tests): no signals
            # a supervised worker leaves reloads to its supervisor (a HUP to the whole process group
            # must neither reload each worker on its own nor kill it, SIGHUP's default)
            loop.add_signal_handler(signal.SIGHUP, (lambda: None) if os.environ.get(SUPERVISED) else gateway.reload)
        try:
            # the server's state: what the connection protocol (gateway/connections.py) enforces and tells
            # the auto cap leaves room for the pools of the config loaded at start
            yield {LIMITS: Limits.from_settings(settings, gateway.router.config.upstream_connections),
                   REFUSED: gateway.client_refused}
        finally:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)
            drain.uninstall()
            await gateway.limits.stop()
            if gateway.shared_health is not None:
                await gateway.shared_health.stop()
            await RESPONSES.flush()
            if gateway.shared is not None:
                await gateway.shared.close()
            await gateway.upstream.close()
            gateway.access_log.flush()

    app = FastAPI(title="GLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    RESPONSES.ttl = settings.responses_ttl
    if gateway.shared is not None:  # every worker and replica continues any conversation
        RESPONSES.store = gateway.shared
    elif not isinstance(RESPONSES.store, ResponseStore):  # (a process that made an app with Redis before)
        RESPONSES.store = ResponseStore()
    RESPONSES.shared_by_workers = bool(os.environ.get(SUPERVISED)) and gateway.shared is None
    RESPONSES.lost = lambda error: gateway.access_log.event("response_not_stored", level="warning",
                                                            error=type(error).__name__)
    budget = RetryBudget()  # one for every door: retries are bounded against all requests in flight
    handlers = {path: Handler(lambda: gateway.router, gateway.upstream, gateway.health,
                              max_body_bytes=settings.max_body_bytes, max_event_bytes=settings.max_event_bytes,
                              observer=gateway, keep_bodies=settings.log_bodies,
                              request_deadline=settings.request_deadline,
                              max_upstream_bytes=settings.max_upstream_bytes, door=door, budget=budget,
                              limits=gateway.limits)
                for path, door in DOORS.items()}
    for path, handler in handlers.items():
        # Listed for FastAPI too (405 for other methods); requests reach them through FrontDoors.
        app.router.routes.append(Route(path, handler, methods=["POST"]))

    def model_card(alias: str) -> dict[str, Any]:
        return {"id": alias, "object": "model", "created": gateway.loaded_at, "owned_by": "glm-gateway"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        key = key_of(request.scope)
        return {"object": "list", "data": [model_card(a) for a in gateway.router.aliases if key.lists(a)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        alias = gateway.router.alias(model_id)
        key = key_of(request.scope)
        if alias not in gateway.router.config.models or not key.allows(alias, model_id):
            raise ModelNotFound(f"model {quoted(model_id)} does not exist", param="model")
        return model_card(model_id)

    def not_stored(response_id: str) -> InvalidRequest:
        error = InvalidRequest(f"response {quoted(response_id)} is unknown, has expired or was not stored",
                               param="response_id", code="not_found")
        error.status = 404
        return error

    def owner(request: Request) -> str:
        key = key_of(request.scope)
        return key.owner

    @app.get("/v1/responses/{response_id}")
    async def get_response(response_id: str, request: Request) -> Response:
        stored = await RESPONSES.stored(response_id, owner(request))
        if stored is None:
            raise not_stored(response_id)
        return Response(stored[0], media_type="application/json")

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
        if not await RESPONSES.forget(response_id, owner(request)):
            raise not_stored(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = gateway.upstream.ready and not drain.draining
        status = "draining" if drain.draining else "ready" if ready else "starting"
        return JSONResponse({"status": status, "models": len(gateway.router.aliases)},
                            status_code=200 if ready else 503)

    if settings.metrics_port is None:  # else served on its own port by the CLI
        @app.get("/metrics")
        async def metrics_page() -> Response:
            return Response(exposition(), media_type=METRICS_CONTENT_TYPE)

    @app.post("/admin/reload")
    async def admin_reload() -> Response:
        supervised = bool(os.environ.get(SUPERVISED))
        problem = gateway.reload(count_success=not supervised)
        if problem is not None:
            return _error_response(InvalidRequest(f"reload refused, the old table keeps serving: {problem}",
                                                  code="invalid_config"))
        if supervised:
            os.kill(os.getppid(), signal.SIGHUP)  # the supervisor replaces every worker, one by one
        return JSONResponse({"status": "reloaded", "models": gateway.router.aliases})

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return _error_response(exc, request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        error = InvalidRequest(str(exc.detail), code="not_found" if exc.status_code == 404 else "invalid_request")
        error.status = exc.status_code
        return _error_response(error, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(InvalidRequest(str(exc.errors()[0].get("msg", "invalid request"))), request.url.path)

    return ClientAuth(FrontDoors(handlers, app), keys=lambda: gateway.keys, admin_key=settings.admin_key,
                      refused=gateway.refused)


def _shared_state(settings: Settings) -> RedisState | None:
    """The store every replica shares, when there is one (``GATEWAY_REDIS_URL``)."""
    if not settings.redis_url:
        return None
    from .state.redis import RedisState
    return RedisState(settings.redis_url, lease_ttl=settings.lease_ttl, timeout=settings.redis_timeout)
