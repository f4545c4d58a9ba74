"""The fleet server: routing, per-deployment behaviour (auth, quota, events, faults, latency) and stats.

One listening socket serves every deployment: ``/NAME/v1/chat/completions`` (OpenAI-style
deployments), ``/NAME/v1/messages`` (Anthropic-style), ``/NAME/v1/models``; plus
``GET /stats``, ``POST /reset`` and ``GET /healthz`` for the fleet itself.

A chat request goes through, in order: route (404) → auth (401) → body (400) →
``strict_model`` (404) → scheduled outage (503 or reset) and rate limit (429) → the
``rpm`` quota (429 + ``Retry-After``, checked without queueing) → faults → the latency
model and the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

try:
    from aiolimiter import AsyncLimiter
except ModuleNotFoundError as exc:  # an extra, not a dependency of the library
    raise ModuleNotFoundError(
        f"the mock fleet needs aiolimiter, which is not installed: pip install 'specexec[fleet]' ({exc})",
        name=exc.name,
    ) from None

from ._anthropic import AnthropicWire
from ._config import Deployment, FleetConfig
from ._faults import FaultInjector, FaultPlan
from ._http import ClientDisconnected, Exchange, HttpProtocol, HttpRequest
from ._latency import LatencyModel
from ._openai import OpenAIWire
from ._quality import QualityModel
from ._reply import count_tokens, make_reply, refusal_reply
from ._schedule import Schedule
from ._wire import ChatRequest, Completion, Wire, WireError

__all__ = ["Fleet", "FleetStartError", "is_loopback"]

_JSON = ("content-type", "application/json")


class FleetStartError(RuntimeError):
    """The fleet could not start (bad host, a missing API key variable, a port in use, …)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``127.0.0.0/8``, ``::1`` or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    completed: int = 0
    disconnected: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    quota_limited: int = 0
    tokens_sent: int = 0  # output tokens handed to the transport (a disconnect stops the count)


class _DeploymentServer:
    """Serves one deployment: its wire format, latency model, faults, quota and counters."""

    def __init__(self, fleet: Fleet, deployment: Deployment, seed: int, env: Mapping[str, str]) -> None:
        self.fleet = fleet
        self.d = deployment
        self.wire: Wire = AnthropicWire() if deployment.api == "anthropic" else OpenAIWire()
        self.latency = LatencyModel(deployment, seed)
        self.faults = FaultInjector(deployment, seed)
        self.quality = QualityModel(deployment, fleet.config.classes, seed)
        self.expected_key: str | None = None
        if deployment.api_key_env is not None:
            key = env.get(deployment.api_key_env)
            if not key:
                raise FleetStartError(
                    f"deployment {deployment.name!r}: environment variable {deployment.api_key_env} "
                    "(its api_key_env) is not set"
                )
            self.expected_key = key
        self.limiter: AsyncLimiter | None = None
        self.counters = _Counters()
        self.in_flight = 0
        self.serial = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters, reseed the draws, refill the quota."""
        self.counters = _Counters()
        self.latency.reseed()
        self.faults.reseed()
        self.quality.reseed()
        self.limiter = AsyncLimiter(self.d.rpm, 60.0) if self.d.rpm else None

    def stats(self) -> dict[str, Any]:
        """This deployment's entry in ``/stats``."""
        c = self.counters
        return {
            "provider": self.d.provider,
            "region": self.d.region,
            "api": self.d.api,
            "model": self.d.model,
            "requests": c.requests,
            "completed": c.completed,
            "disconnected": c.disconnected,
            "in_flight": self.in_flight,
            "by_status": {str(k): v for k, v in sorted(c.by_status.items())},
            "faults": dict(sorted(c.faults.items())),
            "events": dict(sorted(c.events.items())),
            "quota_limited": c.quota_limited,
            "tokens_sent": c.tokens_sent,
        }

    # -- responses

    def _headers(self, request_id: str, content_type: tuple[str, str] = _JSON) -> list[tuple[str, str]]:
        return [content_type, (self.wire.request_id_header, request_id)]

    def _answer_headers(
        self, request_id: str, content_type: tuple[str, str], clock: float, ttft: float
    ) -> list[tuple[str, str]]:
        # The fleet's own view of the request: when it arrived on the event clock and the
        # time to first token it drew (brownouts included), for tests and debugging.
        return [
            *self._headers(request_id, content_type),
            ("x-fleet-clock", f"{clock:.6f}"),
            ("x-fleet-ttft", repr(ttft)),
        ]

    async def _error(
        self,
        ex: Exchange,
        request_id: str,
        status: int,
        message: str,
        extra: list[tuple[str, str]] | None = None,
        *,
        drip: float = 0.0,
    ) -> None:
        """An error answer in the deployment's format; ``drip`` > 0: its head at once, then its
        body one byte every ``drip`` seconds (a slow error body)."""
        headers, body = [*self._headers(request_id), *(extra or [])], self.wire.error(status, message)
        if drip <= 0:
            await ex.respond(status, headers, body)
            return
        await ex.start(status, headers)
        for i in range(len(body)):
            await asyncio.sleep(drip)
            await ex.send(body[i : i + 1])
        await ex.end()

    async def _too_many(self, ex: Exchange, request_id: str, retry_after: float, message: str) -> None:
        headers = [
            ("retry-after", str(max(0, math.ceil(retry_after)))),
            ("retry-after-ms", str(max(0, round(retry_after * 1000)))),
        ]
        await self._error(ex, request_id, 429, message, headers, drip=self.d.faults.error_drip)

    # -- serving

    async def serve(self, req: HttpRequest, ex: Exchange, rest: str) -> None:
        """Serve one request to this deployment, counting it in the stats."""
        counters = self.counters
        counters.requests += 1
        self.in_flight += 1
        self.serial += 1
        request_id = f"req_{self.d.name}_{self.serial}"
        try:
            await self._serve(req, ex, rest, request_id)
        finally:
            self.in_flight -= 1
            if counters is self.counters:  # not reset meanwhile
                if ex.status is not None:
                    counters.by_status[ex.status] += 1
                if ex.completed:
                    counters.completed += 1
                elif not ex.aborted:
                    counters.disconnected += 1

    async def _serve(self, req: HttpRequest, ex: Exchange, rest: str, request_id: str) -> None:
        wire = self.wire
        rest = rest.rstrip("/")
        if rest == wire.chat_path:
            if req.method != "POST":
                await self._error(ex, request_id, 405, f"Method {req.method} not allowed on {req.path}")
                return
        elif rest == "/models" or rest.startswith("/models/"):
            if req.method != "GET":
                await self._error(ex, request_id, 405, f"Method {req.method} not allowed on {req.path}")
                return
        else:
            await self._error(ex, request_id, 404, f"Unknown path {req.path}")
            return

        if self.expected_key is not None:
            presented = wire.api_key(req.headers)
            if presented is None:
                await self._error(ex, request_id, 401, "Missing API key")
                return
            if presented != self.expected_key:
                await self._error(ex, request_id, 401, "Incorrect API key provided")
                return

        if rest == "/models":
            await ex.respond(200, self._headers(request_id), wire.models(self.d))
            return
        if rest.startswith("/models/"):
            if rest[len("/models/") :] == self.d.model:
                await ex.respond(200, self._headers(request_id), msgspec.json.encode(wire.model_object(self.d)))
            else:
                await self._error(ex, request_id, 404, f"The model {rest[len('/models/') :]!r} does not exist")
            return

        try:
            chat = wire.parse(req.body)
        except WireError as e:
            await self._error(ex, request_id, e.status, e.message)
            return
        if self.d.strict_model and chat.model != self.d.model:
            message = f"The model {chat.model!r} does not exist or you do not have access to it"
            await self._error(ex, request_id, 404, message)
            return
        await self._chat(req, ex, chat, request_id)

    async def _chat(self, req: HttpRequest, ex: Exchange, chat: ChatRequest, request_id: str) -> None:
        c = self.counters
        clock = self.fleet.clock(req.started)
        effects = self.fleet.schedule.effects(self.d, clock)
        if effects.outage is not None:
            c.events["outage"] += 1
            if effects.outage.mode == "reset":
                ex.abort()
            else:
                message = "The service is temporarily unavailable (outage)"
                await self._error(ex, request_id, effects.outage.status, message)
            return
        if effects.rate_limit is not None:
            c.events["rate_limit"] += 1
            await self._too_many(ex, request_id, effects.rate_limit.retry_after, "Rate limit reached (scheduled event)")
            return
        if self.limiter is not None:
            if not self.limiter.has_capacity():
                c.quota_limited += 1
                await self._too_many(
                    ex, request_id, self.d.quota_retry_after, f"Rate limit reached: {self.d.rpm:g} requests per minute"
                )
                return
            await self.limiter.acquire()  # does not wait: capacity was just checked
        if effects.factor != 1.0:
            c.events["brownout"] += 1

        ttft = self.latency.ttft() * effects.factor
        per_token = self.d.per_token * effects.factor
        plan = self.faults.draw()
        for kind in plan.kinds:
            c.faults[kind] += 1
        await self._answer(req, ex, chat, request_id, plan, clock, ttft, per_token)

    async def _answer(
        self,
        req: HttpRequest,
        ex: Exchange,
        chat: ChatRequest,
        request_id: str,
        plan: FaultPlan,
        clock: float,
        ttft: float,
        per_token: float,
    ) -> None:
        wire = self.wire
        failure = plan.failure
        c = self.counters
        if failure == "reset":
            ex.abort()
            return
        if failure == "stall":
            await ex.wait_lost()
            return
        if failure == "context_window":
            await ex.respond(400, self._headers(request_id), wire.context_window_error())
            return
        injected = {
            "error_500": (500, "The server had an error while processing your request (injected)"),
            "error_503": (503, "The server is overloaded or not ready yet (injected)"),
            "overloaded_529": (529, "Overloaded (injected)"),
        }.get(failure or "")
        if injected is not None:
            status, message = injected
            await self._error(ex, request_id, status, message, drip=self.d.faults.error_drip)
            return

        reply = make_reply(
            self.d,
            chat.messages,
            chat.max_tokens,
            tool=chat.tool,
            json_schema=chat.json_schema,
            json_mode=chat.json_mode,
            marked=self.quality.answer(chat.messages),
        )
        if plan.refusal:
            reply = refusal_reply(self.d.faults.refusal_text, chat.max_tokens)
        completion = Completion(
            id=wire.new_id(self.d, self.serial),
            created=int(time.time()),
            model=self.d.drifted_model if plan.wrong_model else self.d.model,
            reply=reply,
            prompt_tokens=sum(count_tokens(text) for _, text in chat.messages),
            usage=not plan.no_usage,
            include_usage=chat.include_usage,
        )
        if plan.slow_drip:
            per_token = max(per_token, self.d.faults.slow_drip_interval)
        loop = asyncio.get_running_loop()
        t0 = req.started

        async def until(t: float) -> None:
            delay = t0 + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

        content_type = ("content-type", wire.stream_content_type) if chat.stream else _JSON
        if failure == "malformed":
            await until(ttft)
            headers = self._answer_headers(request_id, content_type, clock, ttft)
            await ex.respond(200, headers, wire.malformed(completion, chat.stream))
            return
        n = len(reply.tokens)
        cut = chat.stream and failure == "cut_short"
        if cut:
            n = max(1, n // 2) if n else 0
        stall_after = failure == "stall_after"
        if not chat.stream:
            if stall_after:
                await ex.wait_lost()
            await until(ttft + per_token * n)
            await ex.respond(200, self._answer_headers(request_id, _JSON, clock, ttft), wire.body(completion))
            c.tokens_sent += n
            return
        if stall_after:
            n = min(n, self.d.faults.stall_after_tokens)
        await until(ttft)
        headers = [*self._answer_headers(request_id, content_type, clock, ttft), ("cache-control", "no-cache")]
        # With no per-token time every event is due at the TTFT: they go out in one write, as a
        # server's buffered socket sends a burst, not one write (and one wake-up of the client)
        # per token. Paced tokens keep a write each, also when the loop runs late.
        pending = [wire.stream_start(completion)]
        queued = min(n, 1)  # tokens in `pending`: counted as sent once their write went out
        started = False

        async def flush() -> None:
            nonlocal started, queued
            data = b"".join(pending)
            pending.clear()
            if not started:
                started = True
                await ex.start(200, headers, data)
            else:
                await ex.send(data)
            c.tokens_sent += queued
            queued = 0

        async def at(t: float) -> None:  # send what is pending, then wait until `t`
            if per_token > 0 or t0 + t > loop.time():
                await flush()
                await until(t)

        for i in range(1, n):
            await at(ttft + per_token * i)
            pending.append(wire.stream_token(completion, i))
            queued += 1
        if stall_after:
            await flush()
            await ex.wait_lost()  # begun, then silent: no token, no end, until the client leaves
        await at(ttft + per_token * n)
        pending.append(wire.stream_cut(completion) if cut else wire.stream_end(completion))
        if started:
            await ex.end(b"".join(pending))
        else:
            await ex.start(200, headers, b"".join(pending), last=True)
        c.tokens_sent += queued


class Fleet:
    """The mock provider fleet, in this process, on asyncio (uvloop where the loop is uvloop's).

    ``async with Fleet(config) as fleet:`` listens on ``127.0.0.1`` and a free port;
    ``fleet.base_url("alpha-us")`` is a client's ``base_url``. Leaving the block closes
    the listener, cancels every running handler (a stalled request included) and closes
    every connection: no task outlives :meth:`aclose`.
    """

    def __init__(self, config: FleetConfig, *, seed: int | None = None, env: Mapping[str, str] | None = None) -> None:
        self.config = config.validated() if seed is None else config.with_seed(seed).validated()
        self._env = os.environ if env is None else env
        self.schedule = Schedule(self.config.events)
        self._deployments: dict[str, _DeploymentServer] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[HttpProtocol] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._t0 = 0.0
        self._started_at = 0.0
        self.host = "127.0.0.1"
        self.port = 0
        self._unrouted: Counter[int] = Counter()

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, allow_non_loopback: bool = False) -> None:
        """Listen on ``host:port`` (port 0: a free one). Non-loopback hosts need ``allow_non_loopback``."""
        if not (allow_non_loopback or is_loopback(host)):
            raise FleetStartError(f"refusing to listen on non-loopback host {host!r} (pass --host explicitly)")
        seed = self.config.seed
        self._deployments = {d.name: _DeploymentServer(self, d, seed, self._env) for d in self.config.deployments}
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: HttpProtocol(self._handle, self._connections, self._tasks), host, port, reuse_address=True
            )
        except OSError as e:
            raise FleetStartError(f"cannot listen on {host}:{port}: {e}") from e
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._t0 = self._started_at = loop.time()

    async def aclose(self) -> None:
        """Stop listening, cancel every handler task and close every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for proto in list(self._connections):
            proto.shutdown()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def __aenter__(self) -> Fleet:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or the caller is cancelled), then close."""
        try:
            await stop.wait()
        finally:
            await self.aclose()

    # -- addresses

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def base_url(self, name: str) -> str:
        """The ``base_url`` a client uses for deployment ``name``: ``http://HOST:PORT/NAME/v1``."""
        return f"{self.url}{self.config.deployment(name).base_path}"

    @property
    def base_urls(self) -> dict[str, str]:
        """Every deployment's ``base_url``, by name."""
        return {d.name: self.base_url(d.name) for d in self.config.deployments}

    # -- clock, stats, reset

    def clock(self, at: float | None = None) -> float:
        """Seconds on the scheduled-event clock (since start or the last :meth:`reset`), now or at loop time ``at``."""
        return (asyncio.get_running_loop().time() if at is None else at) - self._t0

    def stats(self) -> dict[str, Any]:
        """The ``/stats`` document (see the package docs for its shape)."""
        loop = asyncio.get_running_loop()
        return {
            "seed": self.config.seed,
            "clock": loop.time() - self._t0,
            "uptime": loop.time() - self._started_at,
            "in_flight": sum(s.in_flight for s in self._deployments.values()),
            "deployments": {name: s.stats() for name, s in self._deployments.items()},
            "unrouted": {
                "requests": sum(self._unrouted.values()),
                "by_status": {str(k): v for k, v in sorted(self._unrouted.items())},
            },
        }

    def reset(self) -> None:
        """Zero every counter, reseed every draw, refill quotas and restart the event clock."""
        for s in self._deployments.values():
            s.reset()
        self._unrouted.clear()
        self._t0 = asyncio.get_running_loop().time()

    # -- routing

    async def _handle(self, req: HttpRequest, ex: Exchange) -> None:
        path = req.path
        if path in ("/stats", "/reset", "/healthz"):
            await self._control(req, ex)
            return
        name, _, rest = path[1:].partition("/")
        server = self._deployments.get(name)
        if server is None or not (rest == "v1" or rest.startswith("v1/")):
            what = "deployment or path" if server is None else "path"
            await self._not_found(ex, f"Unknown {what} {path}")
            return
        with contextlib.suppress(ClientDisconnected):
            await server.serve(req, ex, rest[2:])

    async def _not_found(self, ex: Exchange, message: str) -> None:
        self._unrouted[404] += 1
        await ex.respond(404, [_JSON], OpenAIWire().error(404, message))

    async def _control(self, req: HttpRequest, ex: Exchange) -> None:
        wanted = "POST" if req.path == "/reset" else "GET"
        if req.method != wanted:
            await ex.respond(405, [_JSON, ("allow", wanted)], OpenAIWire().error(405, f"use {wanted} {req.path}"))
            return
        if req.path == "/stats":
            body = msgspec.json.encode(self.stats())
        elif req.path == "/reset":
            self.reset()
            body = b'{"status":"reset"}'
        else:
            body = msgspec.json.encode({"status": "ok", "deployments": len(self._deployments)})
        await ex.respond(200, [_JSON, ("cache-control", "no-store")], body)
