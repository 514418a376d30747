"""The ASGI app: endpoints, middleware, and the lifespan that owns the one upstream pool."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Route

from . import config as config_file
from .accesslog import AccessLog
from .auth import ClientAuth
from .errors import GatewayError, InvalidRequest, ModelNotFound
from .exchange import Exchange
from .handler import ChatCompletions
from .routing import Router
from .settings import Settings
from .upstream import Upstream


class Gateway:
    """The process's state: settings, the routing table in force, and the upstream pool."""

    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router
        self.loaded_at = int(time.time())
        self.upstream = Upstream()
        self.access_log = AccessLog(log_bodies=settings.log_bodies)

    def finished(self, exchange: Exchange) -> None:
        self.access_log.request(exchange)


def _error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gateway = Gateway(settings, Router(config_file.load(settings.config)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.upstream.start()
        try:
            yield
        finally:
            await gateway.upstream.close()

    app = FastAPI(title="GLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    chat = ChatCompletions(lambda: gateway.router, gateway.upstream, max_body_bytes=settings.max_body_bytes,
                           max_event_bytes=settings.max_event_bytes, finished=gateway.finished)
    # A raw ASGI endpoint: no request object or validation layer between the socket and the handler.
    app.router.routes.append(Route("/v1/chat/completions", chat, methods=["POST"]))

    def model_card(alias: str) -> dict[str, Any]:
        return {"id": alias, "object": "model", "created": gateway.loaded_at, "owned_by": "glm-gateway"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(a) for a in gateway.router.aliases]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in gateway.router.config.models:
            raise ModelNotFound(f"model {model_id!r} does not exist", param="model")
        return model_card(model_id)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = gateway.upstream.ready
        return JSONResponse({"status": "ready" if ready else "starting", "models": len(gateway.router.aliases)},
                            status_code=200 if ready else 503)

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        error = InvalidRequest(str(exc.detail), code="not_found" if exc.status_code == 404 else "invalid_request")
        error.status = exc.status_code
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(InvalidRequest(str(exc.errors()[0].get("msg", "invalid request"))))

    app.add_middleware(ClientAuth, client_keys=settings.client_keys, admin_key=settings.admin_key)
    return app
