"""``probes`` re-exports its public names, each documented (methods and properties too)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import specexec
from specexec import _feed, probes


def test_all_names_exist_and_are_documented() -> None:
    undocumented = []
    for module in (probes, _feed):
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
                undocumented.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                        continue
                    if not (member.__doc__ or "").strip():
                        undocumented.append(f"{name}.{attr}")
    assert not undocumented


def test_every_private_module_has_a_docstring_and_public_names() -> None:
    for info in pkgutil.iter_modules(probes.__path__):
        if info.name == "__main__":
            continue
        module = importlib.import_module(f"probes.{info.name}")
        assert (module.__doc__ or "").strip(), info.name
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"probes.{info.name}.{name}"


def test_health_feed_is_public() -> None:
    assert specexec.HealthFeed is _feed.HealthFeed
