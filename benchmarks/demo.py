"""``specexec demo``: the loopback fleet, a short live comparison of policies, a table and a plot.

Starts the mock provider fleet (``benchmarks.fleet``, its default deployments: three providers
in three regions, realistic latency and faults) on 127.0.0.1, then runs the built-in ``demo``
scenario (``benchmarks/scenarios/demo.toml``) live — single, failover, hedge, race and pick,
one after the other on a freshly reset fleet, ≈ 20 s in all — prints the table and writes the
JSON, ``.hgrm`` files and the percentile plot to ``./specexec-demo/`` (or ``--out``). No API
keys, no external services.

It also starts the probe daemon (``python -m specexec.probes``, a subprocess probing every deployment
once a second, canary included) and gives each policy's runtime a ``specexec.HealthFeed``
following it; ``--no-probes`` skips it, and if it cannot start the demo goes on without it
(health is then learned from the demo's own traffic only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import msgspec

from specexec import HealthFeed, PolicyError
from specexec.bench.bench._live import FeedsFn, fleet_config, run_on_fleet
from specexec.bench.bench._progress import Progress, progress_wanted
from specexec.bench.bench._report import build_result, render, to_json, write_outputs
from specexec.bench.bench._scenario import load_scenario
from specexec.bench.fleet import FleetConfig, FleetStartError, start_fleet_process

__all__ = ["DEFAULT_DURATION", "DEFAULT_OUT", "PROBE_INTERVAL", "ProbeDaemonProcess", "main"]

DEFAULT_DURATION = 20.0
"""Seconds of load in all (split evenly between the policies)."""
DEFAULT_OUT = "specexec-demo"
"""Where the results go unless ``--out`` says otherwise."""
PROBE_INTERVAL = 1.0
"""Seconds between two probes of one deployment (the daemon's minimum)."""
PROBE_START_TIMEOUT = 15.0
"""Seconds the demo waits for the probe daemon to listen before going on without it."""

_PROBE_KEY_ENV = "SPECEXEC_DEMO_PROBE_KEY"  # the fleet checks no key; Anthropic backends want one named
_CANARY = "What is 2 + 2? Answer with a number only."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specexec demo",
        description="Start the loopback mock provider fleet and compare single, failover, hedge, race and "
        "pick live (about 20 s; no API keys, no network).",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        metavar="S",
        help=f"seconds of load in all, split between the policies (default {DEFAULT_DURATION:g})",
    )
    p.add_argument("--rate", type=float, metavar="R", help="requests per second (default: the scenario's, 40)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the arrivals and of the fleet's draws")
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"write results.json, .hgrm files and latency.png here (default ./{DEFAULT_OUT})",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--no-probes", action="store_true", help="do not start the probe daemon")
    return p


class ProbeDaemonProcess:
    """The probe daemon (``python -m specexec.probes``) in a subprocess, probing the fleet's deployments.

    ``start`` writes its config (one ``[[backends]]`` entry per deployment, ``[probe]`` every
    ``PROBE_INTERVAL`` seconds with the canary question every 5th probe, HTTP on a free
    loopback port) and waits for its ready file; ``url`` is then its base URL. A context
    manager: leaving it stops the daemon (SIGTERM, then SIGKILL) and removes its files.
    """

    def __init__(self) -> None:
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="specexec-demo-probes-"))

    def config_text(self, config: FleetConfig, urls: Mapping[str, str]) -> str:
        """The daemon's TOML config for ``config``'s deployments served at ``urls``."""
        lines = []
        for d in config.deployments:
            lines += ["[[backends]]", f'kind = "{d.api}"', f'name = "{d.name}"', f'base_url = "{urls[d.name]}"']
            lines += [f'model = "{d.model}"', f'provider = "{d.provider}"', f'region = "{d.region}"']
            if d.api == "anthropic":
                lines.append(f'api_key_env = "{_PROBE_KEY_ENV}"')
            lines.append("")
        lines += [
            "[probe]",
            f"interval = {PROBE_INTERVAL}",
            "timeout = 5.0",
            'bind = "127.0.0.1"',
            "port = 0",
            "window = 60.0",
            "",
            "[probe.canary]",
            f'query = {{ prompt = "{_CANARY}", max_tokens = 4 }}',
            'expect = "4"',
            "every = 5",
        ]
        return "\n".join(lines) + "\n"

    def start(self, config: FleetConfig, urls: Mapping[str, str], timeout: float = PROBE_START_TIMEOUT) -> str:
        """Start the daemon and return its URL; raises ``RuntimeError`` (with its stderr) if it
        does not listen within ``timeout`` seconds."""
        path = self._dir / "probes.toml"
        path.write_text(self.config_text(config, urls), encoding="utf-8")
        ready = self._dir / "ready.json"
        env = dict(os.environ, **{_PROBE_KEY_ENV: "demo-key-not-checked"})
        argv = [
            sys.executable,
            "-m",
            "specexec.probes",
            "--config",
            str(path),
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ]
        argv += ["--log-level", "WARNING"]
        with open(self._dir / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                try:
                    url = str(json.loads(ready.read_text(encoding="utf-8"))["url"])
                except (OSError, ValueError, KeyError):
                    url = ""
                if url:
                    self.url = url
                    return url
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        why = (self._dir / "stderr.log").read_text(encoding="utf-8", errors="replace").strip()[-2000:]
        self.close()
        raise RuntimeError(f"the probe daemon did not start: {why or 'no output'}")

    def close(self) -> None:
        """Stop the daemon and remove its files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ProbeDaemonProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _feeds(url: str) -> FeedsFn:
    """Each policy's runtime follows the daemon (polling its snapshot every second)."""
    return lambda: [HealthFeed(url, interval=PROBE_INTERVAL)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 done, 1 the fleet or a run failed, 2 bad arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    out, err = sys.stdout, sys.stderr
    try:
        scenario = load_scenario("demo")
        per_policy = args.duration / len(scenario.policies)
        scenario = scenario.with_options(duration=per_policy, rate=args.rate, seed=args.seed)
        if args.seed is not None and scenario.fleet is not None:
            scenario = msgspec.structs.replace(scenario, fleet=scenario.fleet.with_seed(args.seed))
    except PolicyError as exc:
        err.write(f"specexec demo: {exc}\n")
        return 2
    config: FleetConfig = fleet_config(scenario)
    regions = sorted({d.region for d in config.deployments})
    providers = sorted({d.provider for d in config.deployments})
    say = err if args.json else out
    say.write(
        f"specexec demo: starting the loopback fleet — {len(config.deployments)} deployments, "
        f"providers {', '.join(providers)}, regions {', '.join(regions)} (127.0.0.1, no API keys)\n"
    )
    say.flush()
    expected = (scenario.workload.expected_requests() + scenario.workload.warmup) * len(scenario.policies)
    progress = Progress("demo", expected, enabled=progress_wanted(json_mode=args.json, stdout=out), stream=err)
    started = time.perf_counter()
    notes: list[str] = []
    try:
        with start_fleet_process(config) as fleet, ProbeDaemonProcess() as probes:
            feeds: FeedsFn | None = None
            if args.no_probes:
                notes.append("no probe daemon (--no-probes): health learned from the demo's own traffic")
            else:
                try:
                    url = probes.start(config, fleet.deployments)
                except RuntimeError as exc:
                    notes.append(f"{exc}; health learned from the demo's own traffic")
                else:
                    feeds = _feeds(url)
                    say.write(f"probe daemon: {url}, probing each deployment every {PROBE_INTERVAL:g} s\n")
            say.write(
                f"comparing {', '.join(scenario.policies)}: {per_policy:g} s each at "
                f"{scenario.workload.rate:g} req/s\n\n"
            )
            say.flush()
            stats = run_on_fleet(scenario, fleet, on_progress=progress.update, feeds=feeds)
    except FleetStartError as exc:
        progress.close()
        err.write(f"specexec demo: the fleet did not start: {exc}\n")
        return 1
    except KeyboardInterrupt:
        progress.close()
        err.write("specexec demo: interrupted\n")
        return 130
    progress.close()
    result = build_result(scenario, "live", stats, elapsed=time.perf_counter() - started, notes=notes)
    if args.json:
        out.write(to_json(result).decode() + "\n")
    else:
        out.write(render(result))
    for line in write_outputs(result, stats, args.out):
        (err if args.json else out).write(line + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
