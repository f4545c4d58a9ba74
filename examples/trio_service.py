"""The chat service on trio: hypercorn's trio worker serving the same endpoints as the FastAPI example.

specexec runs on anyio, and so do Starlette and FastAPI, so the very app of
``examples/fastapi_service`` serves on trio unchanged; what differs is who owns the runtime.
Here ``main`` opens it trio-style, in the program's own structure, around the server — no
lifespan — and a SIGTERM/SIGINT shuts the server down gracefully, after which the runtime's
pools close. Run it against the loopback mock fleet::

    python -m specexec.bench.fleet --port 8100
    python examples/trio_service.py --port 8001

    curl -s localhost:8001/v1/chat -H 'content-type: application/json' -d '{"message": "hello"}'

Endpoints, configuration (``SPECEXEC_BACKENDS``, ``SPECEXEC_ROUTER``, ``SPECEXEC_REDIS_URL``)
and error statuses: see ``examples/fastapi_service/app.py`` and ``settings.py``.
"""

from __future__ import annotations

import argparse
import signal
import sys

import trio
from fastapi_service.app import create_app
from fastapi_service.settings import config_error_message, open_service
from hypercorn.config import Config
from hypercorn.trio import serve

import specexec


async def main(host: str, port: int) -> None:
    """Open the runtime, serve until SIGTERM or SIGINT, then close everything."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 5.0

    async def shutdown_requested() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                return

    async with open_service() as service:
        await serve(create_app(service), config, shutdown_trigger=shutdown_requested)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default 8001)")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except specexec.PolicyError as exc:  # a bad config file: the error says where, no traceback
        print(f"trio_service: {config_error_message(exc)}", file=sys.stderr)
        sys.exit(2)
