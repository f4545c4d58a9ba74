"""The session's shared loopback fleet for the eval tests."""

from benchmarks.fleet.pytest_fixtures import fleet as fleet
