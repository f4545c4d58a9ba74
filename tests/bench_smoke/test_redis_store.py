"""Smoke test of ``python -m specexec.bench.redis_store``: it runs with tiny counts and prints both tables.

Correctness only — never timing: the figures of a few dozen calls on a shared machine mean nothing.
"""

from __future__ import annotations

import pytest

from specexec.bench import redis_store


def test_redis_store_prints_budget_and_run_tables(capsys: pytest.CaptureFixture[str]) -> None:
    redis_store.main(["--calls", "20", "--runs", "30"])
    out = capsys.readouterr().out
    assert "run() µs (median of 30)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("trio", "asyncio+uvloop"))]
    assert [r[0] for r in rows] == ["trio", "asyncio+uvloop"] * 2  # the budget table, then the run() table
    for r in rows[2:]:
        assert len(r) == 6 and all(float(v.rstrip("×")) > 0 for v in r[1:])
