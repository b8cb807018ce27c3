"""The HTTP front door's application: routes, error handlers and middleware, made by `create_app`.

Middleware, outermost first: metrics (sees every answer, 413s and CORS preflights included), CORS
(only when origins are configured), the body-size limit. The gateway client is made at start-up
inside the server's event loop (grpc.aio channels belong to one loop) and closed at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route

from genserve.client import AsyncClient
from genserve.common.config import HttpSettings
from genserve.common.metrics import HttpMetrics
from genserve.http.calls import TIMEOUT_HEADER, FrontDoor
from genserve.http.disconnect import ClientDisconnected
from genserve.http.errors import install_error_handlers
from genserve.http.limits import LimitBody
from genserve.http.media import IMAGE_HEADERS
from genserve.http.metrics import RecordMetrics
from genserve.http.routes import completions, health, jobs, latent, models, playground, vision
from genserve.http.schemas import add_registered_schemas

# Every area's router; a new area adds its own here.
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    models.router,
    completions.router,
    vision.router,
    latent.router,
    jobs.router,
    playground.router,
)
# Status 499 (nginx's "client closed request") for answers nobody is left to read; only metrics see it.
CLIENT_CLOSED_REQUEST = 499


def cors_origins(spec: str) -> list[str]:
    """'https://a.example, https://b.example' → the list; '' → [] (CORS off)."""
    return [origin.strip() for origin in spec.split(",") if origin.strip()]


def create_app(settings: HttpSettings, metrics: HttpMetrics, make_client: Callable[[], AsyncClient]) -> FastAPI:
    """The ASGI application; `make_client` makes the gateway client once the server's loop runs."""
    front = FrontDoor(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        front.client = make_client()
        try:
            yield
        finally:
            client, front.client = front.client, None
            await client.close()

    app = FastAPI(
        title="genserve HTTP API",
        summary="OpenAI-compatible completions over genserve's character-level language models, and more.",
        version="1",
        lifespan=lifespan,
        # FastAPI's document pages load their scripts from a CDN; the stack fetches nothing from
        # outside, so only the document itself is served.
        docs_url=None,
        redoc_url=None,
    )
    app.state.front = front
    install_error_handlers(app, front.errors)
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        # The image routes read their bodies themselves and describe SSE events: their schemas
        # are added to what FastAPI generates (see genserve.http.schemas).
        document = generated()
        add_registered_schemas(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    async def client_gone(request: Request, error: Exception) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    app.add_exception_handler(ClientDisconnected, client_gone)
    for router in ROUTERS:
        app.include_router(router)  # without a prefix: each route spells out its whole path
    # The playground's CSS and script (GET / serves its page).
    app.mount(playground.STATIC_PATH, playground.static_files(), name="static")
    # The routes the metrics name requests by: FastAPI's own (/openapi.json) and every area's.
    served: list[BaseRoute] = [route for route in app.routes if isinstance(route, Route)]
    served += [route for router in ROUTERS for route in router.routes]
    served += [route for route in app.routes if isinstance(route, Mount)]  # counted as "/static"
    for route in served:
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                metrics.init_route(route.path, method)

    # add_middleware puts each one outside those added before it.
    app.add_middleware(LimitBody, max_bytes=settings.max_body_bytes)
    origins = cors_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Api-Key", TIMEOUT_HEADER, "Last-Event-ID"],
            expose_headers=["Retry-After", *IMAGE_HEADERS],
            # Keys travel in headers, never cookies: no credentialed requests.
            allow_credentials=False,
        )
    app.add_middleware(RecordMetrics, metrics=metrics, routes=served)
    return app
