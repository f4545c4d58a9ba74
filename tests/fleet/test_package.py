"""The package's public surface: every export listed, importable and documented."""

from __future__ import annotations

import inspect

import specexec.bench.fleet as fleet_pkg


def test_exports_are_complete_and_documented() -> None:
    public = {n for n in dir(fleet_pkg) if not n.startswith("_") and not inspect.ismodule(getattr(fleet_pkg, n))}
    assert public == set(fleet_pkg.__all__)
    for name in fleet_pkg.__all__:
        obj = getattr(fleet_pkg, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
