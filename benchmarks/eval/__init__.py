"""``specexec eval``: for each task class, the cheapest candidate model that clears the bar
written in the eval file, measured through the engine; written into a router, compared with
the last eval. See ``_file`` for the eval file's shape.

>>> from specexec.bench.eval import load_eval, main
>>> main(["benchmarks/evals/starter.toml", "--sim"])  # doctest: +SKIP
"""

from ._cli import EXIT_REGRESSION as EXIT_REGRESSION
from ._cli import build_parser as build_parser
from ._cli import main as main
from ._file import EvalSpec as EvalSpec
from ._file import load_eval as load_eval
from ._report import EvalReport as EvalReport
from ._report import build_report as build_report
from ._report import render as render
from ._report import to_json as to_json
from ._routes import compare as compare
from ._routes import routes_toml as routes_toml
from ._routes import routing_quality as routing_quality
from ._run import run_eval as run_eval
from ._stats import wilson as wilson

__all__ = [
    "EXIT_REGRESSION",
    "EvalReport",
    "EvalSpec",
    "build_parser",
    "build_report",
    "compare",
    "load_eval",
    "main",
    "render",
    "routes_toml",
    "routing_quality",
    "run_eval",
    "to_json",
    "wilson",
]
