"""The benchmark CLI, ``specexec bench``: compare policies on tail latency, cost and extra load.

A *scenario* (TOML; built-ins in ``benchmarks/scenarios/``) names backends, scheduled events,
an open-loop workload and the policies to compare. It runs in virtual time against simulated
backends (``--sim``: deterministic for a seed), against the loopback mock fleet on the real
clock (``--live``), or against your own endpoints (``--target``). See ``README.md`` here.

>>> from specexec.bench.bench import load_scenario, simulate, build_result, render
>>> scenario = load_scenario("tail-at-scale").with_options(requests=2000)
>>> print(render(build_result(scenario, "sim", simulate(scenario), elapsed=1.0)))  # doctest: +SKIP
"""

from ._cli import build_parser as build_parser
from ._cli import main as main
from ._driver import drive as drive
from ._live import fleet_backends as fleet_backends
from ._live import fleet_config as fleet_config
from ._live import run_live as run_live
from ._live import run_policy_live as run_policy_live
from ._progress import Progress as Progress
from ._progress import progress_wanted as progress_wanted
from ._report import BenchResult as BenchResult
from ._report import PolicyResult as PolicyResult
from ._report import build_result as build_result
from ._report import plot_percentiles as plot_percentiles
from ._report import render as render
from ._report import to_json as to_json
from ._report import write_outputs as write_outputs
from ._scenario import Scenario as Scenario
from ._scenario import builtin_scenarios as builtin_scenarios
from ._scenario import load_scenario as load_scenario
from ._scenario import resolve_scenario as resolve_scenario
from ._sim import simulate as simulate
from ._sim import simulate_policy as simulate_policy
from ._stats import PolicyStats as PolicyStats
from ._stats import Stats as Stats
from ._stats import Summary as Summary
from ._target import CostLine as CostLine
from ._target import confirm as confirm
from ._workload import requests as requests

__all__ = [
    "BenchResult",
    "CostLine",
    "PolicyResult",
    "PolicyStats",
    "Progress",
    "Scenario",
    "Stats",
    "Summary",
    "build_parser",
    "build_result",
    "builtin_scenarios",
    "confirm",
    "drive",
    "fleet_backends",
    "fleet_config",
    "load_scenario",
    "main",
    "plot_percentiles",
    "progress_wanted",
    "render",
    "requests",
    "resolve_scenario",
    "run_live",
    "run_policy_live",
    "simulate",
    "simulate_policy",
    "to_json",
    "write_outputs",
]
