"""Speculative routing: the likely route starts at t = 0 while the LLM router decides.

Loads ``examples/router.toml`` (rules, an LLM router, a daily budget per tenant) and runs a
few queries on simulated backends. A right guess costs no latency; a wrong one is cancelled
the moment the router decides, and the chosen route starts::

    python examples/speculative_routing.py
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio

import specexec
from specexec import Query, Response, SimulatedBackend, Usage


class RouterModel(specexec.BackendBase):
    """A stand-in for a small model asked for a route: "hard" for proofs, else "simple"."""

    async def complete(self, query: Query) -> Response:
        """Answer after 200 ms with a JSON route."""
        await anyio.sleep(0.2)
        route = "hard" if "prove" in query.messages[-1].content.lower() else "simple"
        return Response(json.dumps({"route": route, "confidence": 0.9}), Usage(60, 8))


def backends() -> list[specexec.Backend]:
    """The simulated deployments the router's policies name."""
    cheap = {"input_price": 0.15, "output_price": 0.6}
    return [
        SimulatedBackend("mini-us", 0.3, region="us", reply="Hello!", **cheap),
        SimulatedBackend("mini-eu", 0.3, region="eu", reply="Hello!", **cheap),
        SimulatedBackend("coder-a", 0.5, reply="def f(): ...", input_price=0.5, output_price=2.0),
        SimulatedBackend("coder-b", 0.5, reply="def f(): ...", input_price=0.5, output_price=2.0),
        SimulatedBackend("mid", 0.6, reply="A proof sketch ...", input_price=0.5, output_price=2.0),
        SimulatedBackend("frontier", 1.0, reply="A full proof ...", input_price=3.0, output_price=15.0),
        RouterModel("router-llm", input_price=0.15, output_price=0.6),
    ]


async def main() -> None:
    """Run three queries of one tenant and print what the router did."""
    router = specexec.Router.from_toml(Path(__file__).with_name("router.toml"))
    async with specexec.Runtime(backends()) as rt:
        for text in ("hi there", "prove that sqrt(2) is irrational", "def add(a, b): fix this"):
            result = await rt.run(Query(text, tenant="acme"), router)
            route = result.trace.route
            assert route is not None
            guess = f"guessed {route.speculated} ({route.speculation})" if route.speculated else "no guess"
            print(
                f"{text[:34]:<36}→ {result.route:<7} {result.backend:<9} {result.latency * 1e3:5.0f} ms "
                f"${result.cost:.6f}  {route.selector}; {guess}; budget left {route.budget_remaining:.0%}"
            )


if __name__ == "__main__":
    anyio.run(main)
