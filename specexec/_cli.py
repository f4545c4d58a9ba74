"""The ``specexec`` command: ``demo``, ``bench``, ``eval``, ``fleet``, ``probe``.

Each subcommand lives with its package and is imported only when used, so ``import specexec``
stays light: ``demo``, ``bench`` and ``eval`` in ``specexec.bench``, ``fleet`` in
``specexec.bench.fleet``, ``probe`` in ``specexec.probes``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("specexec.bench.demo", "start the loopback fleet and compare policies live (no API keys)"),
    "bench": ("specexec.bench.bench", "compare policies on tail latency, cost and extra load"),
    "eval": ("specexec.bench.eval", "the cheapest model that passes each task class, measured"),
    "fleet": ("specexec.bench.fleet", "run the loopback mock provider fleet"),
    "probe": ("specexec.probes", "run the probe daemon"),
}

EXTRAS: dict[str, tuple[str, str]] = {
    "aiolimiter": ("fleet", "the mock fleet's provider quotas"),
    "uvloop": ("fleet", "the mock fleet's event loop"),
    "trio": ("fleet", "the benchmarks' virtual time"),
    "matplotlib": ("plot", "the percentile plot"),
}
"""Modules of an extra a subcommand may need: module → (extra, what for)."""

USAGE = (
    "usage: specexec {"
    + ",".join(COMMANDS)
    + "} [options]\n\n"
    + "\n".join(f"  {name:<6} {help_}" for name, (_, help_) in COMMANDS.items())
)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand's ``main(argv) -> int``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        from . import __version__

        print(f"specexec {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"specexec: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(entry[0])
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in EXTRAS:
            raise
        extra, why = EXTRAS[missing]
        print(
            f"specexec {args[0]}: needs {missing} ({why}), which is not installed: pip install 'specexec[{extra}]'",
            file=sys.stderr,
        )
        return 2
    command: Callable[[list[str]], int] = module.main
    return command(args[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
