"""A service on asyncio (or uvloop) never imports trio: not with ``import specexec``, not in a run.

Each case runs in a fresh interpreter where trio is installed (the test extra pulls it), so it
is the library's own imports (and httpx's, through httpcore) that are checked. On trio the same
runs work as before, also when specexec (and so httpx) was imported before trio.
"""

from __future__ import annotations

import pytest

from specexec.bench.fleet import FleetProcess

from ._subprocess import run_fresh

SCRIPT = """
import json, sys
loop, base_url, model = sys.argv[1:]
if loop == "trio-first":
    import trio
import specexec
from specexec.backends import HttpTimeouts, OpenAICompatible
after_import = "trio" in sys.modules

async def answer(query):
    return "4"

async def main():
    callable_backend = specexec.CallableBackend("local", answer)
    http = OpenAICompatible("alpha-us", base_url=base_url, model=model, timeout=HttpTimeouts(connect=2, read=5))
    texts = [(await specexec.run("2+2?", specexec.Policy.single(callable_backend))).response.text]
    async with specexec.Runtime(backends=[http]) as rt:
        texts.append((await rt.run("2+2?", specexec.Policy.single("alpha-us"))).response.text)
    texts.append((await specexec.run("2+2?", specexec.Policy.single(http))).response.text)  # default runtime
    return texts

if loop == "asyncio":
    import asyncio
    texts = asyncio.run(main())
elif loop == "uvloop":
    import uvloop
    texts = uvloop.run(main())
else:
    import trio
    texts = trio.run(main)
print(json.dumps({"after_import": after_import, "after_runs": "trio" in sys.modules, "texts": texts}))
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_services_never_import_trio(fleet: FleetProcess, loop: str) -> None:
    out = run_fresh(SCRIPT, loop, fleet.base_url("alpha-us"), fleet.config.deployment("alpha-us").model)
    assert out["texts"][0] == "4" and len(out["texts"]) == 3 and all(out["texts"])
    assert out == {"after_import": False, "after_runs": False, "texts": out["texts"]}


@pytest.mark.parametrize("loop", ["trio", "trio-first"])
def test_trio_runs_work_whichever_was_imported_first(fleet: FleetProcess, loop: str) -> None:
    out = run_fresh(SCRIPT, loop, fleet.base_url("alpha-us"), fleet.config.deployment("alpha-us").model)
    assert out["texts"][0] == "4" and len(out["texts"]) == 3 and all(out["texts"])
    assert out["after_import"] is (loop == "trio-first") and out["after_runs"] is True
