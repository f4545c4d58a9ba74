"""``Runtime.warm_up`` / ``specexec.warm_up``: after it, a fresh process's first runs import nothing.

Each case runs in a fresh interpreter, so the modules a first run would import lazily (anyio's
event-loop backend, httpcore's network backend, codecs) are not there yet; the fleet's request
counter shows that warming up sends nothing to a provider.
"""

from __future__ import annotations

import pytest

from specexec.bench.fleet import FleetProcess

from ._subprocess import run_fresh

SCRIPT = """
import json, sys
loop, how, base_url, model = sys.argv[1:]
import specexec
from specexec.backends import OpenAICompatible
from specexec.backends._http import HostClients

async def answer(query):
    return "4"

def open_clients(resources):
    return sum(len(c.clients) for c in resources.items().values() if isinstance(c, HostClients))

async def main():
    http = OpenAICompatible("alpha-us", base_url=base_url, model=model)
    local = specexec.CallableBackend("local", answer)
    local_b = specexec.CallableBackend("local-b", answer)
    if how == "runtime":
        rt = specexec.Runtime(backends=[http, local, local_b])
        await rt.__aenter__()
        await rt.warm_up()
        clients = open_clients(rt._resources)
    else:
        rt = specexec.configure(backends=[http, local, local_b])
        await specexec.warm_up()
        clients = open_clients(rt._run_resources())
    before = set(sys.modules)
    texts = [
        (await rt.run("2+2?", specexec.Policy.single("alpha-us"))).response.text,
        (await rt.run("2+2?", specexec.Policy.race(["local", "local-b"]))).response.text,
        (await rt.run("2+2?", specexec.Policy.hedge(["local", "alpha-us"], delay=0.5))).response.text,
    ]
    async with rt.stream("2+2?", specexec.Policy.single("alpha-us")) as s:
        texts.append("".join([delta async for delta in s]))
    new = sorted(set(sys.modules) - before)
    if how == "runtime":
        await rt.__aexit__(None, None, None)
    return {"new": new, "clients": clients, "texts": [bool(t) for t in texts]}

if loop == "trio":
    import trio
    out = trio.run(main)
elif loop == "uvloop":
    import uvloop
    out = uvloop.run(main())
else:
    import asyncio
    out = asyncio.run(main())
print(json.dumps(out))
"""


@pytest.mark.parametrize("how", ["runtime", "default"])
@pytest.mark.parametrize("loop", ["trio", "asyncio", "uvloop"])
def test_after_warm_up_the_first_runs_import_nothing(fleet: FleetProcess, loop: str, how: str) -> None:
    sent = fleet.deployment_stats("alpha-us")["requests"]
    out = run_fresh(SCRIPT, loop, how, fleet.base_url("alpha-us"), fleet.config.deployment("alpha-us").model)
    assert out == {"new": [], "clients": 1, "texts": [True] * 4}
    assert fleet.deployment_stats("alpha-us")["requests"] - sent == 2  # the single and the stream: no warm-up request


LOCAL = """
import json, sys
import specexec

async def answer(query):
    return "4"

async def pieces(query):
    yield "4"

async def main():
    rt = specexec.Runtime(
        backends=[
            specexec.CallableBackend("a", answer),
            specexec.CallableBackend("b", answer),
            specexec.CallableBackend("s", pieces),
        ]
    )
    async with rt:
        await rt.warm_up()
        before = set(sys.modules)
        await rt.run("2+2?", specexec.Policy.race(["a", "b"]))
        await rt.run("2+2?", specexec.Policy.hedge(["a", "b"], delay=0.0, budget=None))
        async with rt.stream("2+2?", specexec.Policy.single("s")) as s:
            text = "".join([delta async for delta in s])
    return {"new": sorted(set(sys.modules) - before), "text": text}

if sys.argv[1] == "trio":
    import trio
    out = trio.run(main)
else:
    import uvloop
    out = uvloop.run(main())
print(json.dumps(out))
"""


@pytest.mark.parametrize("loop", ["trio", "uvloop"])
def test_warm_up_without_http_backends_imports_what_the_engine_needs(loop: str) -> None:
    assert run_fresh(LOCAL, loop) == {"new": [], "text": "4"}
