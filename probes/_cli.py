"""``specexec probe`` / ``python -m specexec.probes``: run the probe daemon from a config file.

Exit status: 0 after a clean stop (SIGTERM or SIGINT: probes are cancelled, the final
snapshot is written), 1 when the daemon cannot run (e.g. the port is taken), 2 for a bad
command line or config (the message names the file and key path).

``--check`` builds everything a start builds — the config, every backend, the health
config, each backend's probe state and the schedule, with the command line's overrides —
then exits without binding, reading or writing the snapshot, or sending anything: a config
it calls ok does not fail at start for a config reason (a taken port still can).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from specexec import PolicyError

from ._config import ProbeConfig, valid_host
from ._daemon import ProbeDaemon
from ._snapshot import write_atomic

__all__ = ["main"]

_log = logging.getLogger("specexec.probes")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specexec probe",
        description="Probe LLM backends on a schedule and publish their health (HTTP and a snapshot file).",
    )
    parser.add_argument("--config", required=True, help="TOML file: [[backends]], [health], [probe]")
    parser.add_argument("--bind", help="address of the HTTP endpoints (default: [probe] bind, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port of the HTTP endpoints (0: any free port)")
    parser.add_argument("--no-http", action="store_true", help="serve no HTTP endpoints (snapshot file only)")
    parser.add_argument("--snapshot", help="snapshot file (default: [probe] snapshot)")
    parser.add_argument("--ready-file", help="write {url, port, pid} as JSON here once listening")
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio", help="event loop (asyncio: uvloop)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ... (default INFO)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    return parser


async def _serve(daemon: ProbeDaemon, ready_file: str | None) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        if ready_file is not None:
            port = int(daemon.url.rsplit(":", 1)[1]) if daemon.url else None
            info = {"url": daemon.url, "port": port, "pid": os.getpid()}
            write_atomic(ready_file, json.dumps(info).encode())
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                _log.info("probe daemon: %s received, shutting down", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe daemon (``specexec probe --config probes.toml``); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code) if isinstance(exc.code, int) else 2
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        print(f"specexec probe: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "hpack"):  # request lines at INFO, connection chatter at DEBUG
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"specexec probe: --port must be 0 to 65535, got {args.port}", file=sys.stderr)
        return 2
    if args.bind is not None and not valid_host(args.bind):
        print(f"specexec probe: --bind must be an IP address or a host name, got {args.bind!r}", file=sys.stderr)
        return 2
    if args.snapshot is not None and "\x00" in args.snapshot:
        print("specexec probe: --snapshot contains a NUL character", file=sys.stderr)
        return 2
    try:
        config = ProbeConfig.load(Path(args.config))
        daemon = ProbeDaemon(  # builds everything a start needs, sends nothing: --check stops here
            config,
            bind=args.bind,
            port=args.port,
            http=False if args.no_http else None,
            **({"snapshot": args.snapshot} if args.snapshot is not None else {}),
        )
    except PolicyError as exc:
        print(f"specexec probe: {_located(exc, args.config)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"specexec probe: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        evaluated = ""
        if daemon.eval is not None:
            pairs = daemon.eval.pairs
            backends = sorted({b for chosen in pairs.values() for b in chosen})
            evaluated = f"; eval {daemon.eval.spec.name!r}: {len(pairs)} class(es) on {', '.join(backends)}"
        print(f"{args.config}: ok ({len(config.backends)} backend(s){evaluated})")
        return 0
    if args.loop == "trio" and importlib.util.find_spec("trio") is None:
        print(
            "specexec probe: --loop trio needs trio, which is not installed: pip install 'specexec[trio]'",
            file=sys.stderr,
        )
        return 2
    try:
        anyio.run(_serve, daemon, args.ready_file, backend=args.loop, backend_options=loop_options(args.loop))
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        return 130
    except BaseException as exc:
        error = _os_error(exc)
        if error is None:
            raise
        print(f"specexec probe: cannot run: {error}", file=sys.stderr)
        return 1
    return 0


def loop_options(loop: str) -> dict[str, bool]:
    """anyio's backend options for ``loop``: uvloop on asyncio where it is installed (``specexec[uvloop]``)."""
    if loop == "asyncio" and sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None:
        return {"use_uvloop": True}
    return {}


def _located(exc: PolicyError, source: str) -> PolicyError:
    """``exc`` naming the config file (errors raised while building backends know only the key path)."""
    if exc.source is not None:
        return exc
    message = str(exc).removesuffix(f" (at {exc.path})")
    return PolicyError(message, path=exc.path, source=source)


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` that stopped the daemon (possibly inside task groups' exception groups)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(OSError)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, OSError) else None
    return None
