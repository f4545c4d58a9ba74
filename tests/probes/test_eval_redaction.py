"""The model id an eval run reports is published redacted and bounded, as the probes' and the HTTP
backends' ids are (``specexec._errors.redact_id``): in trio virtual time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from specexec import Query, SimulatedBackend
from specexec._errors import MAX_ID_CHARS
from specexec.probes import encode_snapshot

from ._support import running, sim_config, virtual_time_backend

pytestmark = pytest.mark.anyio

KEY = "sk-live-EVALSECRET-0123456789abcdef"
ENV = "SPECEXEC_EVAL_REDACTION_TEST_KEY"
HOUR = 3600.0


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


class Keyed(SimulatedBackend):
    """A simulated provider holding a key in the environment, reporting ``reported`` as its model
    during the eval only (its probes report the pin)."""

    api_key_env = ENV

    def __init__(self, name: str, reported: str) -> None:
        super().__init__(name, 0.1, reply=self._reply, model="mini-2025-01", output_tokens=10)
        self.reported = reported

    def _reply(self, query: Query) -> str:
        if "eval_case" not in query.metadata:
            self.reported_model = None
            return "pong"
        self.reported_model = self.reported
        return str(int(query.text.split()[2]) + 1)


def eval_file(tmp: Path) -> Path:
    (tmp / "sum.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "reference": str(i + 1)}) + "\n" for i in range(3))
    )
    path = tmp / "watch.toml"
    path.write_text(
        '[eval]\nname = "watch"\n\n[classes.sum]\ndataset = "sum.jsonl"\nscorer = { kind = "numeric" }\n'
        "min_pass_rate = 0.9\nmax_tokens = 10\n"
    )
    return path


async def test_an_eval_reported_model_is_redacted_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the eval's model id was published as the provider reported it (its key, or a megabyte).
    caplog.set_level(logging.DEBUG)
    names = ("a", "b", "c", "d")
    cfg = sim_config(
        *(f'name = "{n}"\nmodel = "mini-2025-01"' for n in names),
        probe="interval = 3600.0\njitter = 0.0",
        extra=f'[eval]\nfile = "{eval_file(tmp_path)}"\ndaily_budget = 1.0\ninterval = 3600.0\njobs = 1\n',
    )
    # "c" echoes the key with no sk- pattern to give it away: only the configured key's value redacts it
    opaque = KEY.removeprefix("sk-")
    monkeypatch.setenv(ENV, opaque)
    backends = [
        Keyed("a", f"model-of {opaque}"),
        Keyed("b", "M" * (1 << 20)),
        Keyed("c", f"{'x' * 190}{opaque}"),
        Keyed("d", "task-classifier-2025"),
    ]
    async with running(cfg, backends) as daemon:
        await anyio.sleep(10.0)
        report = daemon.health_report()
        outputs = [msgspec.json.encode(report), encode_snapshot(daemon.snapshot()), daemon.metrics().encode()]
    outputs.append("\n".join(r.getMessage() for r in caplog.records).encode())
    assert report.eval is not None
    models = {n: report.eval.results["sum"][n].model for n in names}
    assert models["a"] == "model-of [REDACTED]"
    assert models["b"] is not None and models["b"].startswith("M" * 100) and len(models["b"]) <= MAX_ID_CHARS
    assert models["c"] is not None and opaque[:8] not in models["c"] and len(models["c"]) <= MAX_ID_CHARS
    assert models["d"] == "task-classifier-2025"  # an sk- inside a word is no key
    assert all(report.eval.results["sum"][n].model_changed for n in names)
    for output in outputs:
        assert opaque.encode() not in output and opaque[:12].encode() not in output
        assert len(output) < 100_000
