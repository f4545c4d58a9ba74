"""What ``import specexec`` and a first ``run()`` cost in a fresh process, next to a baseline tree.

    python -m specexec.bench.import_time                       # this tree, median of 5 processes
    git archive e03579b | tar -x -C /tmp/base                  # an older commit, as a source tree
    python -m specexec.bench.import_time --baseline /tmp/base  # both, side by side
    python -m specexec.bench.import_time --http                # also a first HTTP run (loopback fleet)

Every figure comes from fresh interpreters (``--runs`` of them, median reported), started with
the tree first on ``sys.path`` (its own ``specexec``, whatever is installed):

- ``python -X importtime -c "import specexec"``: the total (the ``specexec`` line's cumulative
  time), whether trio was imported, the modules loaded, and the top contributors (self time
  summed per top-level package, so nothing is counted twice);
- the first and second ``specexec.run()`` (a ``CallableBackend``, ``Policy.single``, the
  process-default runtime set by ``specexec.configure`` at start-up), on trio and on asyncio
  (uvloop where installed), with the modules the first run imported; and the same after
  ``await specexec.warm_up()`` (``warm-up`` rows; a tree without it shows ``-``).
  With ``--http`` a fleet (``specexec.bench.fleet``) runs on loopback and the first run also
  goes to one of its OpenAI-compatible deployments.

Nothing here asserts a target; on a shared machine the figures are noisy (say so when quoting them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._timing import fmt, machine_line, machine_note, table

__all__ = ["first_run", "import_profile", "main", "measure"]

ROOT = Path(__file__).resolve().parent.parent
MAX_RUNS = 50
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")

FIRST_RUN = """
import json, sys, time
loop, warm, url, model = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
if loop == "trio":
    import trio
import specexec

async def answer(query):
    return "4"

backends = [specexec.CallableBackend("local", answer)]  # start-up: what a service builds before serving
if url:
    from specexec.backends import OpenAICompatible
    backends.append(OpenAICompatible("http", base_url=url, model=model))
name = "http" if url else "local"
specexec.configure(backends=backends)

async def main():
    out = {}
    if warm:
        if not hasattr(specexec, "warm_up"):
            return None
        t = time.perf_counter()
        await specexec.warm_up()
        out["warm_up_ms"] = (time.perf_counter() - t) * 1e3
    before = set(sys.modules)
    t = time.perf_counter()
    await specexec.run("2+2?", specexec.Policy.single(name))
    out["first_ms"] = (time.perf_counter() - t) * 1e3
    out["first_imports"] = len(set(sys.modules) - before)
    t = time.perf_counter()
    await specexec.run("2+2?", specexec.Policy.single(name))
    out["second_ms"] = (time.perf_counter() - t) * 1e3
    return out

if loop == "trio":
    out = trio.run(main)
else:
    try:
        import uvloop
    except ImportError:
        import asyncio
        out = asyncio.run(main())
    else:
        out = uvloop.run(main())
print(json.dumps(out))
"""


def _python(tree: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
    return done


def import_profile(tree: Path) -> dict[str, Any]:
    """One fresh ``python -X importtime -c "import specexec"`` from ``tree``: total µs, trio, packages."""
    script = "import sys, json, specexec; print(json.dumps(['trio' in sys.modules, len(sys.modules)]))"
    done = _python(tree, ["-X", "importtime", "-c", script])
    total = 0
    per_package: dict[str, int] = defaultdict(int)
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        self_us, cumulative_us, name = int(m[1]), int(m[2]), m[4]
        per_package[name.partition(".")[0]] += self_us
        if name == "specexec":
            total = cumulative_us
    trio, modules = json.loads(done.stdout)
    return {"total_us": total, "trio": trio, "modules": modules, "packages": dict(per_package)}


def first_run(tree: Path, loop: str, warm: bool, url: str = "", model: str = "") -> dict[str, float] | None:
    """One fresh process: the first and second ``run()`` on ``loop`` (after a warm-up if ``warm``)."""
    done = _python(tree, ["-c", FIRST_RUN, loop, "1" if warm else "0", url, model])
    out: dict[str, float] | None = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def measure(tree: Path, runs: int, url: str = "", model: str = "") -> dict[str, Any]:
    """Medians over ``runs`` fresh processes of everything above, for the source tree ``tree``."""
    profiles = [import_profile(tree) for _ in range(runs)]
    packages = {p for prof in profiles for p in prof["packages"]}
    result: dict[str, Any] = {
        "tree": str(tree),
        "import_ms": _median([p["total_us"] / 1000 for p in profiles]),
        "trio_imported": any(p["trio"] for p in profiles),
        "modules": _median([p["modules"] for p in profiles]),
        "packages_ms": {
            name: _median([p["packages"].get(name, 0) / 1000 for p in profiles]) for name in sorted(packages)
        },
        "first_run": {},
    }
    for loop in ("trio", "asyncio"):
        for warm in (False, True):
            samples = [first_run(tree, loop, warm, url, model) for _ in range(runs)]
            kept = [s for s in samples if s is not None]
            key = f"{loop}{' warm-up' if warm else ''}"
            result["first_run"][key] = {field: _median([s[field] for s in kept]) for field in kept[0]} if kept else None
    return result


def _report(results: list[dict[str, Any]], runs: int, http: bool) -> str:
    names = ["baseline", "this tree"] if len(results) == 2 else ["this tree"]
    out = [f"# import specexec and the first run — median of {runs} fresh processes", ""]
    rows = [
        ["import specexec (ms, -X importtime)", *(fmt(r["import_ms"]) for r in results)],
        ["trio imported", *("yes" if r["trio_imported"] else "no" for r in results)],
        ["modules loaded", *(fmt(r["modules"], 0) for r in results)],
    ]
    out += [table(["", *names], rows), ""]
    top = sorted(
        {p for r in results for p in r["packages_ms"]}, key=lambda p: -max(r["packages_ms"].get(p, 0) for r in results)
    )[:12]
    rows = [[p, *(fmt(r["packages_ms"].get(p, 0.0)) for r in results)] for p in top]
    out += ["## top contributors (self time per top-level package, ms)", "", table(["package", *names], rows), ""]
    what = "an OpenAI-compatible backend over loopback HTTP" if http else "a CallableBackend"
    out += [f"## first run() in a fresh process ({what}, Policy.single; ms)", ""]
    rows = []
    for key in results[-1]["first_run"]:
        for field, label in (("warm_up_ms", "warm-up"), ("first_ms", "first run"), ("second_ms", "second run")):
            if field == "warm_up_ms" and "warm-up" not in key:
                continue
            cells = []
            for r in results:
                entry = r["first_run"].get(key)
                cells.append(fmt(entry[field]) if entry and field in entry else "-")
            rows.append([f"{key}: {label}", *cells])
        cells = []
        for r in results:
            entry = r["first_run"].get(key)
            cells.append(fmt(entry["first_imports"], 0) if entry else "-")
        rows.append([f"{key}: modules the first run imported", *cells])
    out += [table(["", *names], rows), ""]
    out.append(f"machine: {machine_line(machine_note())}")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m specexec.bench.import_time", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--runs", type=int, default=5, help=f"fresh processes per figure (1 to {MAX_RUNS}; default 5)")
    p.add_argument("--baseline", type=Path, help="a source tree to compare with (e.g. a `git archive` of a commit)")
    p.add_argument("--http", action="store_true", help="first run over loopback HTTP to the mock fleet")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Measure this tree (and ``--baseline``) and print the report; returns the exit status."""
    args = _parser().parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS:
        print(f"import_time: --runs must be 1 to {MAX_RUNS}, got {args.runs}", file=sys.stderr)
        return 2
    trees = [ROOT]
    if args.baseline is not None:
        if not (args.baseline / "specexec" / "__init__.py").is_file():
            print(f"import_time: --baseline {args.baseline}: no specexec/__init__.py there", file=sys.stderr)
            return 2
        trees.insert(0, args.baseline.resolve())
    url = model = ""
    fleet = None
    if args.http:
        from .fleet import start_fleet_process
        from .fleet.pytest_fixtures import TEST_API_KEY, TEST_API_KEY_ENV, fleet_test_config

        fleet = start_fleet_process(fleet_test_config(), env={TEST_API_KEY_ENV: TEST_API_KEY})
        url, model = fleet.base_url("alpha-us"), fleet.config.deployment("alpha-us").model
    try:
        results = [measure(tree, args.runs, url, model) for tree in trees]
    finally:
        if fleet is not None:
            fleet.close()
    if args.json:
        print(
            json.dumps({"benchmark": "import_time", "runs": args.runs, "results": results, "machine": machine_note()})
        )
    else:
        print(_report(results, args.runs, args.http))
    return 0


if __name__ == "__main__":
    sys.exit(main())
