"""What an eval decides, written into a router (``--write-routes``), compared with the last
eval (``--compare``), and the routing quality of a router over the eval set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from specexec import PolicyError, Router, Runtime
from specexec.routing import router_toml

from ._file import EvalSpec
from ._report import EvalReport
from ._run import CaseResult

__all__ = ["compare", "route_table", "routes_toml", "routing_quality"]


def route_table(passing: Sequence[str]) -> dict[str, Any]:
    """The policy a class's route gets: the chosen model, then the other passing ones cheapest
    first as failovers (a single model when only one passes)."""
    if len(passing) == 1:
        return {"mode": "single", "candidates": [passing[0]]}
    return {"mode": "failover", "candidates": list(passing), "order": "as_listed"}


def routes_toml(spec: EvalSpec, report: EvalReport) -> str:
    """A router TOML (``Router.from_toml`` loads it) with each class's route set to what the eval chose.

    With ``[eval] router`` the base router keeps its selectors, default, budget and other routes;
    only the routes of classes that have a passing model change. Without one, each class gets a
    route and a rule on ``metadata.task_class``; the default is the first class with a choice.
    """
    chosen = {c.route: c.passing for c in report.classes.values() if c.passing}
    if not chosen:
        raise PolicyError("no class has a passing model: there is no route to write", path="--write-routes")
    if spec.file.eval.router is not None:
        base = Router.from_toml(spec.root / spec.file.eval.router)
        data = msgspec.to_builtins(base.source)
        routes = dict(data.get("routes", {}))
        for route, passing in chosen.items():
            routes[route] = route_table(passing)
        data["routes"] = routes
    else:
        data = {
            "default": next(iter(chosen)),
            "routes": {route: route_table(passing) for route, passing in chosen.items()},
            "select": [
                {"kind": "rule", "route": c.route, "metadata": {"task_class": cls}, "name": f"class-{cls}"}
                for cls, c in report.classes.items()
                if c.passing
            ],
        }
    text = router_toml(data)  # the routing layer's shape and writer (policies without their defaults)
    Router.from_toml(text)  # what is written loads
    return text


def compare(previous: EvalReport, current: EvalReport) -> tuple[list[str], list[str]]:
    """``(regressions, changes)`` since ``previous``: a regression is a model that passed and
    now fails its bar, or a class whose choice is gone; changes include newly passing models
    and a different (e.g. cheaper) choice."""
    regressions: list[str] = []
    changes: list[str] = []
    for cls, now in current.classes.items():
        before = previous.classes.get(cls)
        if before is None:
            changes.append(f"{cls}: new class")
            continue
        old_rows = {r.model: r for r in before.models}
        for r in now.models:
            old = old_rows.get(r.model)
            if old is None:
                changes.append(f"{cls}/{r.model}: new candidate ({r.verdict})")
            elif old.verdict == "pass" and r.verdict == "fail":
                regressions.append(
                    f"{cls}/{r.model}: fell below its bar ({'; '.join(r.failures)}; was {old.passed}/{old.cases})"
                )
            elif old.verdict == "fail" and r.verdict == "pass":
                changes.append(f"{cls}/{r.model}: now passes ({r.passed}/{r.cases})")
        if before.chosen is not None and now.chosen is None:
            regressions.append(f"{cls}: nothing passes any more (was {before.chosen})")
        elif before.chosen != now.chosen:
            changes.append(f"{cls}: choice {before.chosen or 'none'} -> {now.chosen}")
    return regressions, changes


async def routing_quality(
    router: Router, spec: EvalSpec, results: Sequence[CaseResult], runtime: Runtime
) -> dict[str, object]:
    """Replay the eval set through ``router``'s decisions over the measured answers.

    For each case: the route ``router.decide`` picks; in a ``cascade`` the candidates are tried
    in order until one passes (each extra one is an escalation, each tried one's cost counts);
    in other modes the first candidate answers. Accuracy: the share of cases whose routed
    model passes (a model the eval did not measure counts as not passing).
    """
    by = {(r.cls, r.case, r.backend): r for r in results}
    per_route: dict[str, dict[str, float]] = {}
    total = ok = escalated = 0
    cost = 0.0
    for cls, cases in spec.cases.items():
        for case in cases:
            decision = await router.decide(case.query, runtime)
            policy = router.routes[decision.name]
            names = [c for c in policy.candidates if isinstance(c, str)]
            tried = names if policy.mode == "cascade" else names[:1]
            passed = False
            spent = 0.0
            steps = 0
            for name in tried:
                r = by.get((cls, case.id, name))
                steps += 1
                if r is None:
                    break
                spent += r.cost
                if r.passed:
                    passed = True
                    break
            stats = per_route.setdefault(decision.name, {"requests": 0, "passed": 0, "cost": 0.0, "escalated": 0})
            stats["requests"] += 1
            stats["passed"] += passed
            stats["cost"] += spent
            stats["escalated"] += steps > 1
            total += 1
            ok += passed
            escalated += steps > 1
            cost += spent
    return {
        "requests": total,
        "accuracy": ok / total if total else 0.0,
        "escalation_rate": escalated / total if total else 0.0,
        "cost_per_request": cost / total if total else 0.0,
        "by_route": {
            name: {
                "requests": int(s["requests"]),
                "accuracy": s["passed"] / s["requests"],
                "escalation_rate": s["escalated"] / s["requests"],
                "cost_per_request": s["cost"] / s["requests"],
            }
            for name, s in per_route.items()
        },
    }


def read_previous(path: str | Path) -> EvalReport:
    """A previous ``--json`` report (``PolicyError`` naming the file when it is not one)."""
    from ._report import from_json

    try:
        return from_json(Path(path).read_bytes())
    except OSError as exc:
        raise PolicyError(f"cannot read the previous report: {exc.strerror}", source=str(path)) from None
    except msgspec.DecodeError as exc:
        raise PolicyError(f"not an eval report written by --json: {exc}", source=str(path)) from None
