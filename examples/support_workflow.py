"""A support workflow in two steps — triage, then respond — each step routed by a rule.

Static per-step assignment: the step travels in ``Query.metadata["step"]`` and a rule per
step picks its route; the step appears in every trace (``trace.route.step``). Triage is a
cheap, fast classification (a hedge of two small deployments); the reply goes to a mid-size
model, or to the frontier model when triage says the ticket is hard. Simulated backends, so
it runs anywhere::

    python examples/support_workflow.py
"""

from __future__ import annotations

import anyio

import specexec
from specexec import Policy, Query, SimulatedBackend, routing

BACKENDS = [
    SimulatedBackend("mini-us", 0.12, region="us", reply="billing", input_price=0.15, output_price=0.6),
    SimulatedBackend("mini-eu", 0.10, region="eu", reply="billing", input_price=0.15, output_price=0.6),
    SimulatedBackend("mid", 0.40, reply="Here is how to update your card ...", input_price=0.5, output_price=2.0),
    SimulatedBackend("frontier", 0.90, reply="Let me walk you through ...", input_price=3.0, output_price=15.0),
]

ROUTER = specexec.Router(
    routes={
        "triage": Policy.hedge(["mini-us", "mini-eu"], delay=0.15),
        "respond": Policy.single("mid"),
        "respond-hard": Policy.failover(["frontier", "mid"]),
    },
    select=[
        routing.rule("triage", step="triage"),
        routing.rule("respond-hard", step="respond", metadata={"difficulty": "hard"}),
        routing.rule("respond", step="respond"),
    ],
    default="respond",
)


async def handle(ticket: str, runtime: specexec.Runtime) -> list[specexec.Result]:
    """Triage ``ticket``, then answer it on the route the triage result implies."""
    triage = await runtime.run(
        Query(f"Classify this ticket: {ticket}", max_tokens=8, metadata={"step": "triage"}), ROUTER
    )
    difficulty = "hard" if "refund dispute" in ticket else "easy"
    reply = await runtime.run(
        Query(ticket, metadata={"step": "respond", "category": triage.response.text, "difficulty": difficulty}),
        ROUTER,
    )
    return [triage, reply]


async def main() -> None:
    """Run two tickets and print each step's route, backend, latency and cost."""
    async with specexec.Runtime(BACKENDS) as rt:
        for ticket in ("How do I change my card?", "I want to open a refund dispute about order 1234."):
            for result in await handle(ticket, rt):
                route = result.trace.route
                assert route is not None
                print(
                    f"{route.step:<8} → {result.route:<13} {result.backend:<9} "
                    f"{result.latency * 1e3:6.0f} ms ${result.cost:.6f}  ({route.selector}: {route.why})"
                )


if __name__ == "__main__":
    anyio.run(main)
