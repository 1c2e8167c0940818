"""The FastAPI application of the platform API (the deploy-server control plane)."""

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlplatform import __version__
from mlplatform.api import access, deploy, instances, tokens
from mlplatform.errors import PlatformError
from mlplatform.platform import Platform

logger = logging.getLogger("mlplatform.api.access")

API_PREFIX = "/platform/api/v1"
INTERNAL_AUTH_PATH = "/platform/internal/auth"
QUIET_PREFIXES = (INTERNAL_AUTH_PATH, f"{API_PREFIX}/health")


class AccessLog:
    """One line per request, level by status; health and route-auth checks at DEBUG."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope["path"]
            level = logging.INFO
            if path.startswith(QUIET_PREFIXES):
                level = logging.DEBUG
            elif status >= 500:
                level = logging.ERROR
            elif status >= 400:
                level = logging.WARNING
            # The query string is left out: it is never needed and could carry secrets.
            logger.log(
                level,
                "%s %s %d %.1fms",
                scope["method"],
                path,
                status,
                (time.perf_counter() - started) * 1000,
            )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "message": message}, status_code=status)


async def _platform_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PlatformError)
    return _error(exc.status_code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(
            f"{where}: {error.get('msg')}" if where else str(error.get("msg"))
        )
    return _error(422, "invalid request: " + "; ".join(problems))


def _route_auth(platform: Platform) -> Route:
    async def check(request: Request) -> Response:
        deployment_id = request.path_params["deployment_id"]
        header = request.headers.get("authorization")
        deploys = platform.deploys
        if deploys.route_auth_cached(deployment_id, header) or await run_in_threadpool(
            deploys.check_route_auth, deployment_id, header
        ):
            return PlainTextResponse("ok")
        return PlainTextResponse(
            "unauthorized",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="mlplatform deployment"'},
        )

    return Route(f"{INTERNAL_AUTH_PATH}/{{deployment_id}}", check)


def create_app(platform: Platform) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        platform.start()
        try:
            yield
        finally:
            platform.stop()

    app = FastAPI(
        title="mlplatform",
        version=__version__,
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.state.platform = platform
    app.add_exception_handler(PlatformError, _platform_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get(f"{API_PREFIX}/health", include_in_schema=False)
    def health() -> dict[str, str | int]:
        return {"status": "ok", "version": __version__, "pid": os.getpid()}

    app.include_router(deploy.router, prefix=API_PREFIX)
    app.include_router(tokens.router, prefix=API_PREFIX)
    app.include_router(access.router, prefix=API_PREFIX)
    app.include_router(instances.router, prefix=API_PREFIX)
    # The route-auth check sits first and bypasses FastAPI's dependency machinery:
    # Traefik calls it on every request to a protected deployment.
    app.router.routes.insert(0, _route_auth(platform))
    app.add_middleware(AccessLog)
    return app
