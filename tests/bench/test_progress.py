"""The progress line: shown on a terminal only, never in --json mode or under CI."""

from __future__ import annotations

import io

import pytest

from specexec.bench.bench import Progress, progress_wanted


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_when_progress_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert progress_wanted(json_mode=False, stdout=_Tty())
    assert not progress_wanted(json_mode=True, stdout=_Tty())
    assert not progress_wanted(json_mode=False, stdout=io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not progress_wanted(json_mode=False, stdout=_Tty())


def test_line_and_drawing() -> None:
    out = io.StringIO()
    p = Progress("tail", 1000, enabled=True, stream=out, interval=0.0)
    p.started -= 10.0
    line = p.line(250)
    assert line.startswith("tail  250/1,000 req  ") and "req/s" in line and "elapsed 0:10" in line
    assert "ETA 0:30" in line
    p.update(250)
    p.close()
    assert out.getvalue().startswith("\r\x1b[K") and out.getvalue().endswith("\r\x1b[K")


def test_disabled_writes_nothing() -> None:
    out = io.StringIO()
    p = Progress("x", None, enabled=False, stream=out)
    p.update(5)
    p.close()
    assert out.getvalue() == ""
    assert "ETA" not in Progress("x", None, enabled=True).line(5)
