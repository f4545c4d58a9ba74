"""The session's shared loopback fleet for the eval tests."""

from specexec.bench.fleet.pytest_fixtures import fleet as fleet
