"""Backend tests run on trio and on asyncio+uvloop through anyio's pytest plugin."""

from __future__ import annotations

import pytest

from specexec.bench.fleet.pytest_fixtures import fleet as fleet  # the session's shared test fleet

FAKE_KEY = "sk-test-SECRETSECRET1234"
"""A recognisable fake API key: it must never show up in an error, repr or log."""


@pytest.fixture(
    params=[pytest.param(("trio", {}), id="trio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Each async test runs once on trio and once on asyncio with uvloop."""
    return request.param  # type: ignore[no-any-return]
