"""A strict reader of the Prometheus text format 0.0.4, for checking ``/metrics``."""

from __future__ import annotations

import math
import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{({_LABEL}(?:,{_LABEL})*)?\}})? (\S+)$")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_SUFFIXES = {"summary": ("", "_sum", "_count"), "histogram": ("_bucket", "_sum", "_count")}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Families by name: ``[(sample name, labels, value)]``. Raises ``AssertionError`` on any format error."""
    assert text.endswith("\n"), "the last line must end with a line feed"
    families: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    current: str | None = None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_NAME, name), f"line {number}: bad metric name {name!r}"
            assert name not in families, f"line {number}: second HELP/TYPE block for {name}"
            families[name] = []
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and name not in types, f"line {number}: TYPE for {name} out of place"
            assert kind in _TYPES, f"line {number}: unknown type {kind!r}"
            types[name] = kind
            continue
        assert not line.startswith("#"), f"line {number}: stray comment"
        m = _SAMPLE.match(line)
        assert m, f"line {number}: not a sample line: {line!r}"
        sample, labels_text, value_text = m.groups()
        assert current is not None and current in types, f"line {number}: sample before HELP/TYPE"
        allowed = [current + s for s in _SUFFIXES.get(types[current], ("",))]
        assert sample in allowed, f"line {number}: {sample} outside its family {current}"
        labels = {k: _unescape(v) for k, v in _LABEL_PAIR.findall(labels_text or "")}
        if value_text in ("NaN", "+Inf", "-Inf"):
            value = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}[value_text]
        else:
            value = float(value_text)
            assert value_text.lower() not in ("nan", "inf", "-inf", "infinity"), f"line {number}: Python float text"
        families[current].append((sample, labels, value))
    return families
