"""The public face of ``specexec.backends``: explicit re-exports, each documented."""

from __future__ import annotations

import inspect

import specexec.backends as backends


def test_all_is_complete_and_importable() -> None:
    public = {name for name in dir(backends) if not name.startswith("_")}  # dir: the lazily loaded ones too
    assert set(backends.__all__) == public
    for name in backends.__all__:
        assert getattr(backends, name) is not None


def test_every_public_class_and_function_is_documented() -> None:
    for name in backends.__all__:
        obj = getattr(backends, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_complete_states_its_cancellation_behaviour() -> None:
    for cls in (backends.OpenAICompatible, backends.Anthropic):
        doc = inspect.getdoc(cls.complete)
        assert doc is not None and "Cancellation" in doc


def test_reachable_from_the_package() -> None:
    import specexec

    assert specexec.backends.OpenAICompatible is backends.OpenAICompatible
