"""``specexec eval``: for each task class, the cheapest candidate model that clears the bar
written in the eval file, measured through the engine; written into a router, compared with
the last eval. See ``_file`` for the eval file's shape. Continuous evaluation (``watch``,
``run_round``; the probe daemon's ``[eval]``) re-runs a sample on a schedule and flags drift.

>>> from specexec.bench.eval import load_eval, main
>>> main(["benchmarks/evals/starter.toml", "--sim"])  # doctest: +SKIP
"""

from ._cli import EXIT_REGRESSION as EXIT_REGRESSION
from ._cli import build_parser as build_parser
from ._cli import main as main
from ._continuous import Check as Check
from ._continuous import Drift as Drift
from ._continuous import EvalHealth as EvalHealth
from ._continuous import PairResult as PairResult
from ._continuous import run_round as run_round
from ._continuous import sample_jobs as sample_jobs
from ._continuous import summarise as summarise
from ._continuous import watch as watch
from ._file import EvalSpec as EvalSpec
from ._file import load_eval as load_eval
from ._report import EvalReport as EvalReport
from ._report import build_report as build_report
from ._report import render as render
from ._report import to_json as to_json
from ._routes import compare as compare
from ._routes import routes_toml as routes_toml
from ._routes import routing_quality as routing_quality
from ._run import CaseResult as CaseResult
from ._run import Ceiling as Ceiling
from ._run import CostBudget as CostBudget
from ._run import Job as Job
from ._run import run_eval as run_eval
from ._stats import wilson as wilson

__all__ = [
    "EXIT_REGRESSION",
    "CaseResult",
    "Ceiling",
    "Check",
    "CostBudget",
    "Drift",
    "EvalHealth",
    "EvalReport",
    "EvalSpec",
    "Job",
    "PairResult",
    "build_parser",
    "build_report",
    "compare",
    "load_eval",
    "main",
    "render",
    "routes_toml",
    "routing_quality",
    "run_eval",
    "run_round",
    "sample_jobs",
    "summarise",
    "to_json",
    "watch",
    "wilson",
]
