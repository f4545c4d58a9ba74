"""The public API: every name the issues promise is exported, and every public name is documented."""

from __future__ import annotations

import inspect

import pytest

import specexec

REQUIRED = {
    "run", "Runtime", "Query", "Response", "Result", "Policy", "Backend", "CallableBackend", "SimulatedBackend",
    "verifiers", "scorers", "backends", "config", "SpecExecError", "PolicyError", "NoAcceptableResponse",
    "DeadlineExceeded", "BudgetExceeded", "BackendError", "RateLimited", "Unavailable", "Timeout", "BadResponse",
    "BadRequest", "AuthError", "Trace", "AttemptRecord", "JsonLinesSink", "LoggingSink", "HealthConfig",
    "BreakerConfig", "HedgeBudgetConfig", "Limits", "LogNormal", "Mixture", "slow_tail",
    "routing", "Router", "Budget", "RouteDecision",
}  # fmt: skip


def public_names(module: object) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n in dir(module) if not n.startswith("_") and not inspect.ismodule(getattr(module, n))]


def test_required_names_are_exported() -> None:
    missing = REQUIRED - set(dir(specexec))
    assert not missing


@pytest.mark.parametrize(
    "module", [specexec, specexec.verifiers, specexec.scorers, specexec.backends, specexec.config, specexec.routing]
)
def test_every_public_name_has_a_docstring(module: object) -> None:
    undocumented = []
    for name in public_names(module):
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            undocumented.append(name)
        if inspect.isclass(obj) and obj.__module__.startswith("specexec"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not (member.__doc__ or "").strip():
                    undocumented.append(f"{name}.{attr}")
    assert not undocumented


def test_public_objects_come_from_private_modules_or_public_subpackages() -> None:
    for name in public_names(specexec):
        obj = getattr(specexec, name)
        module = getattr(obj, "__module__", "specexec")
        if module.startswith("specexec"):
            tail = module.split(".")[1:] or [""]
            assert tail[0].startswith("_") or tail[0] in {
                "verifiers",
                "scorers",
                "backends",
                "config",
                "routing",
                "",
            }, name
