"""Running the fleet as a program: ``run_fleet`` (a coroutine) and ``main`` (the CLI)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from ._config import DEFAULT_CONFIG_PATH, FleetConfig, FleetConfigError
from ._server import Fleet, FleetStartError, is_loopback

__all__ = ["main", "run_fleet", "run_on_uvloop"]


def _write_ready_file(path: str | os.PathLike[str], fleet: Fleet) -> None:
    """Write ``{"port", "url", "pid", "deployments": {name: base_url}}`` atomically."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    doc = {"port": fleet.port, "url": fleet.url, "pid": os.getpid(), "deployments": fleet.base_urls}
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(0.5)


async def run_fleet(
    config: FleetConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = None,
    ready_file: str | os.PathLike[str] | None = None,
    stop: asyncio.Event | None = None,
    allow_non_loopback: bool = False,
    announce: bool = True,
    exit_with_parent: int | None = None,
) -> None:
    """Serve ``config`` until ``stop`` is set (or until cancelled), then shut down cleanly.

    Prints ``fleet listening on http://HOST:PORT`` when ``announce`` and writes the ready
    file (``{"port", "url", "pid", "deployments": {name: base_url}}``) once listening.
    ``exit_with_parent`` (a pid) stops the fleet when its parent process goes away.
    Every handler task has finished when this returns or raises.
    """
    stop = stop or asyncio.Event()
    fleet = Fleet(config, seed=seed)
    await fleet.start(host, port, allow_non_loopback=allow_non_loopback)
    if not is_loopback(host):
        print(f"fleet: warning: listening on non-loopback address {host}", file=sys.stderr, flush=True)
    watcher: asyncio.Task[None] | None = None
    try:
        if ready_file is not None:  # before the line: whoever reads the line finds the file
            _write_ready_file(ready_file, fleet)
        if announce:
            print(f"fleet listening on {fleet.url}", flush=True)
        if exit_with_parent is not None:
            watcher = asyncio.get_running_loop().create_task(_watch_parent(exit_with_parent, stop))
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await fleet.aclose()


def run_on_uvloop(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on uvloop, or on plain asyncio where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # uvloop is in the fleet extra, and not on Windows
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _serve_with_signals(config: FleetConfig, args: argparse.Namespace, host: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    await run_fleet(
        config,
        host=host,
        port=args.port,
        seed=args.seed,
        ready_file=args.ready_file,
        stop=stop,
        allow_non_loopback=args.host is not None,
        exit_with_parent=args.exit_with_parent,
    )


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Loopback mock fleet of OpenAI- and Anthropic-compatible LLM deployments.",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="fleet TOML (default: the example fleet)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    p.add_argument("--host", default=None, help="address (default 127.0.0.1; non-loopback only if given)")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--ready-file", type=Path, default=None, help="write {port, url, deployments} JSON here when ready")
    p.add_argument("--exit-with-parent", type=int, default=None, metavar="PID", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "specexec fleet") -> int:
    """The ``specexec fleet`` / ``python -m specexec.bench.fleet`` command (``prog``: the name its
    usage shows); returns the exit status."""
    args = _parser(prog).parse_args(argv)
    try:
        config = FleetConfig.load(args.config)
    except FleetConfigError as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fleet: cannot read {args.config}: {e.strerror or e}", file=sys.stderr)
        return 2
    host = args.host if args.host is not None else "127.0.0.1"
    try:
        run_on_uvloop(_serve_with_signals(config, args, host))
    except FleetStartError as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - a second ^C, or no signal handlers
        return 130
    return 0
