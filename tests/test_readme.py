"""The README's Quick start, run exactly as written (extracted from README.md).

It must use the headline form — ``specexec.configure(...)`` once, then
``await specexec.run(query, policy)`` with no ``runtime=`` — and only simulated backends, and
it runs the same on trio (virtual time) and asyncio+uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import uvloop

from specexec import _default

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start() -> str:
    """The first ```python block after the ``## Quick start`` heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)
    assert len(section) == 2, "README.md has no '## Quick start' section"
    found = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert found is not None, "the Quick start section has no ```python block"
    return found.group(1)


@pytest.fixture(autouse=True)
def _fresh_default() -> Iterator[None]:
    saved = _default._runtime
    _default._runtime = None
    try:
        yield
    finally:
        _default._runtime = saved


def test_quick_start_uses_the_headline_form() -> None:
    code = quick_start()
    assert "await specexec.run(" in code
    assert "specexec.configure(" in code
    assert "runtime=" not in code and "Runtime(" not in code  # the process default, nothing else
    assert "http" not in code.lower()  # simulated backends only: nothing leaves the process


@pytest.mark.parametrize("loop", ["trio", "asyncio+uvloop"])
def test_quick_start_runs_as_written(loop: str) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_quick_start"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quick_start(), str(README), "exec"), namespace)
        main = namespace["main"]
        if loop == "trio":
            trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        else:
            uvloop.run(main())
    lines = out.getvalue().splitlines()
    assert lines, "the Quick start printed nothing"
    assert lines[0].split()[1] in {"fast", "spare"}  # text, backend, latency, cost
    assert any(" accepted " in f" {line} " for line in lines[1:])
    assert not asyncio.iscoroutine(main)
