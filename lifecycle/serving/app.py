"""The FastAPI app: the endpoints' routes, the guard every request passes, startup and shutdown, probes, metrics."""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from fastapi.exceptions import RequestValidationError

from lifecycle.params.serve import ServeParams
from lifecycle.serving.api import ApiError, api_error, error_response, http_error, invalid_request, server_error
from lifecycle.serving.classification import Classifications
from lifecycle.serving.completions import Completions
from lifecycle.serving.engine import Served
from lifecycle.serving.services import Services

log = logging.getLogger("llm-lifecycle.serve")

NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
          "auth (i.e. Authorization: Bearer YOUR_KEY).")


def bearer_token(header: str) -> str | None:
    """The credentials of an `Authorization: Bearer <key>` header, the scheme in any case (RFC 7235: schemes are
    case-insensitive); None without the scheme (a bare key) or without a key."""
    scheme, _, token = header.strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def answer(handler: Callable, scope, receive, send) -> None:
    """What FastAPI's route would answer: `handler`'s response, or the body errors' 400 (an ApiError goes up to the
    guard, which answers it)."""
    request = Request(scope, receive)
    try:
        response = await handler(request)
    except RequestValidationError as err:
        response = await invalid_request(request, err)
    await response(scope, receive, send)


class Server:
    """What the app does besides answering: the batcher's worker, access checks and metrics, probes."""

    def __init__(self, services: Services, direct: dict[tuple[str, str], Callable]):
        self.services, self.ready = services, False
        self.direct = direct  # (method, path) -> handler of a Request, answered by the guard itself

    async def lifespan(self, app):
        worker = asyncio.create_task(self.services.batcher.work())
        for decoder in self.services.decoders.values():
            await decoder.start()
        self.ready = True
        yield
        self.ready = False
        worker.cancel()
        for decoder in self.services.decoders.values():
            await decoder.stop()
        self.services.executor.shutdown(wait=False, cancel_futures=True)

    def guard(self, app):
        """The ASGI middleware every request passes (plain ASGI: Starlette's BaseHTTPMiddleware costs a task and
        a stream per request): the API key and body size limit, then metrics by endpoint and status; any unexpected
        failure becomes a 500 in OpenAI's shape. The model endpoints (`direct`) are answered here, not through
        FastAPI's router, exception middleware and dependency solving: on 2 cores the server's own CPU per request
        is what decoding loses (README, "Continuous batching against llama.cpp")."""
        async def guarded(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            endpoint, start, status = scope["path"], time.perf_counter(), []

            async def sending(message):
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)
            try:
                if endpoint.startswith("/v1/"):
                    self.check_access(Request(scope))
                handler = self.direct.get((scope["method"], endpoint))
                await (answer(handler, scope, receive, sending) if handler else app(scope, receive, sending))
            except Exception as err:  # never let a request take the server down
                if not isinstance(err, ApiError):
                    log.exception("unhandled error on %s", endpoint)
                if not status:  # nothing sent yet: the error is the response
                    await error_response(err if isinstance(err, ApiError) else server_error())(scope, receive, sending)
            self.count(endpoint, status[0] if status else 500, start)
        return guarded

    def count(self, endpoint: str, status: int, start: float) -> None:
        metrics = self.services.metrics
        if status >= 400:
            metrics.errors.labels(str(status)).inc()
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def check_access(self, request: Request) -> None:
        """The API key (when one is set), then the declared body size (a chunked body is checked as it arrives)."""
        api_key, limit = self.services.api_key, self.services.settings.max_body_bytes
        if api_key:  # as OpenAI answers: no Bearer key at all, or a wrong one
            given = bearer_token(request.headers.get("authorization", ""))
            challenge = {"WWW-Authenticate": "Bearer"}
            if given is None:
                raise ApiError(401, NO_KEY, headers=challenge)
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key", headers=challenge)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"Request body of {declared} bytes is over the limit of {limit}.",
                           code="body_too_large")

    async def models(self):
        """The model ids; each names the registry version its variant came from, when served from the registry."""
        data = []
        for model_id, variant in self.services.router.model_ids.items():
            entry = {"id": model_id, "object": "model", "created": 0, "owned_by": "llm-lifecycle"}
            registry = getattr(self.services.served.get(variant or self.services.router.default), "registry", None)
            data.append({**entry, "registry": registry} if registry else entry)
        return {"object": "list", "data": data}

    async def healthz(self):
        return {"status": "ok"}

    async def readyz(self):
        from fastapi.responses import JSONResponse
        if not self.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ready", "variants": sorted(self.services.served),
                "queued": self.services.batcher.queue.qsize(),
                "decoding": {name: d.in_flight for name, d in self.services.decoders.items()},
                "decoders": {name: d.pids for name, d in self.services.decoders.items()}}

    async def prometheus(self):
        from fastapi.responses import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return Response(generate_latest(self.services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: ServeParams, served: dict[str, Served]):
    """The FastAPI app over already-loaded variants (keyed by variant name)."""
    from fastapi import FastAPI
    from starlette.exceptions import HTTPException

    services = Services.build(settings, served)
    server = Server(services, {("POST", "/v1/completions"): Completions(services).completions,
                               ("POST", "/v1/classify"): Classifications(services).classify})
    app = FastAPI(title="llm-lifecycle", lifespan=server.lifespan)
    app.state.metrics, app.state.batcher = services.metrics, services.batcher
    app.add_middleware(server.guard)
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(HTTPException)(http_error)  # no such route (404), wrong method (405)
    for (method, path), handler in server.direct.items():  # routed too: /openapi.json lists them
        app.add_api_route(path, handler, methods=[method])
    app.get("/v1/models")(server.models)
    app.get("/healthz")(server.healthz)
    app.get("/readyz")(server.readyz)
    app.get("/metrics")(server.prometheus)
    return app
