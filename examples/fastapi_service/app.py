"""A chat service on FastAPI + uvicorn (uvloop): hedged answers, streamed answers, Prometheus metrics.

Run it against the loopback mock fleet (two terminals)::

    python -m specexec.bench.fleet --port 8100
    uvicorn fastapi_service.app:app --app-dir examples --loop uvloop --port 8000

    BODY='{"message": "hello", "tenant": "acme"}'; JSON='content-type: application/json'
    curl -s localhost:8000/v1/chat -H "$JSON" -d "$BODY"
    curl -sN localhost:8000/v1/chat/stream -H "$JSON" -d "$BODY"
    curl -s localhost:8000/metrics | grep specexec_runs_total

Endpoints:

- ``POST /v1/chat`` ``{"message", "tenant", "max_tokens"}`` → ``{"text", "backend", "route",
  "cost", "latency", "attempts", "worker"}``: one ``Runtime.run`` through the router of
  ``router.toml`` (a hedge policy, a daily budget per tenant).
- ``POST /v1/chat/stream`` (same body) → ``text/event-stream``: ``data: {"delta": ...}`` per piece
  of the committed attempt's text, then ``event: done`` with the result (as ``/v1/chat``: its
  ``text`` is the deltas joined). An error before the first token is an ordinary HTTP error;
  after it, ``event: error``. A client that goes away cancels the race at once (every upstream
  request is closed), not at the next write.
- ``GET /metrics``: ``specexec.metrics`` (runs, attempts, hedges, latency histograms, cost ...).
- ``GET /healthz``: 200 once the runtime is open.

Errors map to statuses: ``BudgetExceeded`` 402, ``RateLimited`` 429, ``DeadlineExceeded`` 504; a run
that sent nothing because every backend was at its rate or concurrency limit 429 (behind open
breakers 503); ``NoAcceptableResponse`` and other backend errors 502; the body is ``{"error": kind, "detail":
message}`` (specexec's messages never hold keys or query text).

The runtime is opened in the app's lifespan and closed at shutdown (``settings.open_service``:
backends from ``backends.toml``, Redis when ``SPECEXEC_REDIS_URL`` is set). Run two processes
with the same ``SPECEXEC_REDIS_URL`` (or ``uvicorn --workers 2``) and they share one budget and one
set of rate limits.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import specexec
import specexec.metrics

from .settings import Service, config_error_message, open_service

WORKER = str(os.getpid())


class ChatRequest(BaseModel):
    """The body of both chat endpoints."""

    message: str = Field(min_length=1)
    tenant: str = "-"
    max_tokens: int = Field(default=64, ge=1, le=4096)

    def query(self) -> specexec.Query:
        """The specexec query of this request."""
        return specexec.Query(self.message, max_tokens=self.max_tokens, tenant=self.tenant)


def summary(result: specexec.Result) -> dict[str, Any]:
    """What a client is told about a result, besides its text."""
    trace = result.trace
    return {
        "backend": result.backend,
        "route": result.route,
        "cost": result.cost,
        "latency": result.latency,
        "attempts": sum(1 for a in trace.attempts if a.outcome != "skipped"),
        "worker": WORKER,
    }


def error_status(exc: specexec.SpecExecError) -> tuple[int, dict[str, str]]:
    """The HTTP status (and headers) for a specexec error."""
    if isinstance(exc, specexec.BudgetExceeded):
        return 402, {}
    if isinstance(exc, specexec.RateLimited):
        retry = exc.retry_after
        return 429, ({"retry-after": str(max(1, round(retry)))} if retry is not None else {})
    if isinstance(exc, specexec.DeadlineExceeded):
        return 504, {}
    if isinstance(exc, specexec.PolicyError):
        return 500, {}  # a configuration error: nothing the client can fix
    if isinstance(exc, specexec.NoAcceptableResponse) and all(a.outcome == "skipped" for a in exc.attempts):
        # nothing was sent: every backend was at its limit (429) or behind an open breaker (503)
        limited = any("limit" in a.reason for a in exc.attempts)
        return (429, {"retry-after": "1"}) if limited else (503, {"retry-after": "1"})
    return 502, {}


def error_body(exc: specexec.SpecExecError) -> dict[str, str]:
    """``{"error": kind, "detail": message}``."""
    return {"error": type(exc).__name__, "detail": str(exc)}


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client leaves (the request body has been read: the next ASGI
    message is ``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class ChatStream(Response):
    """The streamed answer as server-sent events; a client disconnect cancels the race at once.

    Starlette's ``StreamingResponse`` notices a disconnect only at its next write (ASGI 2.4), and
    a race waiting for its first token writes nothing; so this response listens for
    ``http.disconnect`` beside the stream and cancels the task group, which leaves the
    ``async with stream`` and so cancels every attempt. The status line waits for the first
    token, so an error before it (402 for the budget ...) is an ordinary HTTP error.
    """

    media_type = "text/event-stream"

    def __init__(self, service: Service, query: specexec.Query) -> None:  # no super(): it sets a body
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store")]
        self.service = service
        self.query = query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_disconnect, receive, tg.cancel_scope)
            await self._respond(send)
            tg.cancel_scope.cancel()  # answered: stop listening

    async def _respond(self, send: Send) -> None:
        started = False

        async def start() -> None:
            nonlocal started
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def body(chunk: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

        svc = self.service
        try:
            async with svc.runtime.stream(self.query, svc.router) as stream:
                async for delta in stream:
                    await start()
                    await body(sse({"delta": delta}))
            await start()
            result = stream.result
            await body(sse({"text": result.response.text, **summary(result)}, "done"), more=False)
        except specexec.SpecExecError as exc:
            if started:
                await body(sse(error_body(exc), "error"), more=False)
                return
            status, headers = error_status(exc)
            payload = json.dumps(error_body(exc)).encode()
            raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            raw += [(k.encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await body(payload, more=False)


class CleanStartupErrors:
    """ASGI middleware: a configuration error at start-up is reported to the server
    (``lifespan.startup.failed``) as the message in ``errors`` alone, not as Starlette's traceback
    of it; uvicorn logs it on stderr and exits non-zero."""

    def __init__(self, app: ASGIApp, errors: list[str]) -> None:
        self.app = app
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_clean(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.errors:
                message = {**message, "message": self.errors[-1]}
            await send(message)

        await self.app(scope, receive, send_clean)


def create_app(service: Service | None = None) -> FastAPI:
    """The app. Without ``service`` its lifespan opens one from the environment (uvicorn); a
    program that opens the runtime itself (``examples/trio_service.py``) passes it in."""
    startup_errors: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            app.state.service = service
            yield
            return
        async with AsyncExitStack() as stack:
            try:
                opened = await stack.enter_async_context(open_service())
            except specexec.PolicyError as exc:
                startup_errors.append(config_error_message(exc))
                raise
            app.state.service = opened
            yield

    app = FastAPI(title="specexec chat example", lifespan=lifespan)
    app.add_middleware(CleanStartupErrors, errors=startup_errors)

    @app.exception_handler(specexec.SpecExecError)
    async def specexec_error(request: Request, exc: specexec.SpecExecError) -> JSONResponse:
        status, headers = error_status(exc)
        return JSONResponse(error_body(exc), status_code=status, headers=headers)

    @app.post("/v1/chat")
    async def chat(body: ChatRequest, request: Request) -> Any:
        """Answer through the router's hedge policy; a client that leaves cancels the run (ASGI
        servers do not cancel a handler on disconnect, so it listens for ``http.disconnect``)."""
        svc: Service = request.app.state.service
        result: specexec.Result | None = None
        refused: specexec.SpecExecError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_disconnect, request.receive, tg.cancel_scope)
            try:
                result = await svc.runtime.run(body.query(), svc.router)
            except specexec.SpecExecError as exc:  # raised here, not as a task group's ExceptionGroup
                refused = exc
            tg.cancel_scope.cancel()  # answered: stop listening
        if refused is not None:
            raise refused  # the exception handler makes it a status (402 for the budget ...)
        if result is None:  # the client left: nobody reads this
            return Response(status_code=499)
        return {"text": result.response.text, **summary(result)}

    @app.post("/v1/chat/stream")
    async def chat_stream(body: ChatRequest, request: Request) -> Response:
        """Stream the committed attempt's text as server-sent events."""
        return ChatStream(request.app.state.service, body.query())

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """The Prometheus exposition of this process's runs."""
        content_type, data = specexec.metrics.exposition(request.app.state.service.metrics.registry)
        return Response(data, media_type=content_type)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Ready: the runtime is open."""
        return {"status": "ok", "worker": WORKER}

    return app


app = create_app()
"""The app uvicorn serves (``uvicorn fastapi_service.app:app --app-dir examples``)."""
