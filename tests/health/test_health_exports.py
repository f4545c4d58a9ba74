"""specexec._health re-exports each name, and every public class and method has a docstring."""

from __future__ import annotations

import inspect

import specexec._health as health

EXPORTS = {
    "BackendHealth",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "ConcurrencyLimit",
    "FailoverThrottle",
    "HealthConfig",
    "HedgeBudget",
    "LatencyWindow",
    "RateLimiter",
}


def test_exports_are_complete() -> None:
    public = {name for name in dir(health) if not name.startswith("_")}
    assert public == EXPORTS


def test_public_classes_and_methods_have_docstrings() -> None:
    for name in EXPORTS - {"BreakerState"}:
        cls = getattr(health, name)
        assert inspect.getdoc(cls), name
        for attr, member in vars(cls).items():
            if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                continue
            assert inspect.getdoc(member), f"{name}.{attr}"
