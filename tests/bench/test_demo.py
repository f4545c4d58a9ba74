"""``specexec demo``: the fleet, five policies live, the table, JSON and the plot — no keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specexec.bench import demo


def test_demo_runs_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    assert demo.main(["--duration", "5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("specexec demo: starting the loopback fleet — 6 deployments")
    assert "latency vs baseline (single)" in out and f"wrote {tmp_path / 'latency.png'}" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "latency.png", "pick.hgrm"}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["mode"] == "live" and doc["scenario"] == "demo"
    assert [p["name"] for p in doc["policies"]] == ["single", "failover", "hedge", "race", "pick"]
    for p in doc["policies"]:
        assert p["summary"]["requests"] >= 10
        assert p["summary"]["success"] >= 0.9
    assert doc["policies"][3]["summary"]["extra_load"] > 1.0  # race launches all three


def test_demo_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--duration", "-1"]) == 2
    assert "--duration must be > 0" in capsys.readouterr().err
