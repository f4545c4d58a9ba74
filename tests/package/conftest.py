"""Package tests: what a fresh process imports, the extras, the warm-up and the built wheel."""

from __future__ import annotations

from specexec.bench.fleet.pytest_fixtures import fleet as fleet  # the session's shared test fleet
