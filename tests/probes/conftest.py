"""Fixtures of the probe daemon's tests: the shared loopback fleet (a subprocess, started on first use)."""

from specexec.bench.fleet.pytest_fixtures import fleet  # noqa: F401  (the shared session fixture)
