"""Continuous evaluation in the probe daemon (``[eval]``), in trio virtual time: the schedule, the
daily budget, what is published (``/v1/health``, the snapshot, ``/metrics``), the drift flag,
resuming, and a service reading it all through ``HealthFeed``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from specexec import HealthFeed, PolicyError, Query, Runtime, SimulatedBackend
from specexec.bench.eval import wilson
from specexec.probes import ProbeConfig, ProbeDaemon, decode_snapshot, encode_snapshot
from specexec.probes._cli import main as probe_main

from ._prometheus import parse
from ._support import WALL0, running, sim_config, virtual_time_backend, wall

pytestmark = pytest.mark.anyio

HOUR = 3600.0
DAY = 86_400.0


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


def eval_file(tmp: Path, *, n: int = 10, bar: float = 0.9, classes: str = "") -> Path:
    """An eval file of one class ``sum`` (``What is i + 1?``, numeric, ``max_tokens = 10``) and no backends."""
    (tmp / "sum.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "reference": str(i + 1)}) + "\n" for i in range(n))
    )
    path = tmp / "watch.toml"
    path.write_text(
        '[eval]\nname = "watch"\n\n'
        f'[classes.sum]\ndataset = "sum.jsonl"\nscorer = {{ kind = "numeric" }}\nmin_pass_rate = {bar}\n'
        f"max_tokens = 10\n{classes}"
    )
    return path


class Model:
    """A simulated provider whose quality can change: answers ``i + 1`` for cases ``i < good``."""

    def __init__(self, good: int = 100) -> None:
        self.good = good
        self.calls: list[float] = []  # loop times the eval calls were answered (probes are not counted)
        self.in_flight = 0
        self.most_in_flight = 0

    def reply(self, query: Query) -> str:
        if "eval_case" not in query.metadata:
            return "pong"
        self.calls.append(anyio.current_time())
        n = int(query.text.split()[2])
        return str(n + 1) if n < self.good else "no idea"


def backend(model: Model, name: str = "mini", *, latency: float = 0.1, price: float = 0.0, **kw: Any) -> Any:
    return SimulatedBackend(
        name,
        latency,
        reply=model.reply,
        model="mini-2025-01",
        output_tokens=10,
        output_price=price,
        **kw,
    )


def config(
    evalfile: Path,
    eval_: str = "",
    *,
    names: tuple[str, ...] = ("mini",),
    probe: str = "",
    daily_budget: float = 1.0,
) -> ProbeConfig:
    return sim_config(
        *(f'name = "{n}"\nmodel = "mini-2025-01"' for n in names),
        probe=f"interval = 3600.0\njitter = 0.0\n{probe}",
        extra=f'[eval]\nfile = "{evalfile}"\ndaily_budget = {daily_budget}\ninterval = 3600.0\njobs = 1\n{eval_}',
    )


# -- the config section --------------------------------------------------------------------------


def test_eval_section_loads_with_its_defaults(tmp_path: Path) -> None:
    cfg = config(eval_file(tmp_path))
    assert cfg.eval is not None
    assert (cfg.eval.interval, cfg.eval.jobs, cfg.eval.sample, cfg.eval.timeout) == (3600.0, 1, None, 60.0)
    daemon = ProbeDaemon(cfg)
    assert daemon.eval is not None and daemon.eval.pairs == {"sum": ("mini",)}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("interval = 59.0", "$.eval.interval"),
        ("interval = inf", "$.eval.interval"),
        ("jobs = 0", "$.eval.jobs"),
        ("jobs = 65", "$.eval.jobs"),
        ("sample = 0", "$.eval.sample"),
        ("timeout = 0.0", "$.eval.timeout"),
        ("intervall = 60.0", "$.eval.intervall"),
        ('backends = ["nope"]', "$.eval.backends[0]"),
        ('backends = ["mini", "mini"]', "$.eval.backends"),
    ],
)
def test_eval_section_errors_name_the_key_path(tmp_path: Path, body: str, path: str) -> None:
    text = f'[[backends]]\nkind = "simulated"\nname = "mini"\n[eval]\nfile = "x.toml"\ndaily_budget = 1.0\n{body}\n'
    with pytest.raises(PolicyError) as info:
        ProbeConfig.load(text)
    assert info.value.path == path


def test_the_daily_budget_is_required_and_bounded() -> None:
    base = '[[backends]]\nkind = "simulated"\nname = "mini"\n[eval]\nfile = "x.toml"\n'
    with pytest.raises(PolicyError, match="daily_budget") as info:
        ProbeConfig.load(base)
    assert info.value.path == "$.eval"
    for bad in ("-1.0", "nan", "1e9"):
        with pytest.raises(PolicyError) as info:
            ProbeConfig.load(base + f"daily_budget = {bad}\n")
        assert info.value.path == "$.eval.daily_budget"


def test_a_relative_eval_file_is_next_to_the_config_file(tmp_path: Path) -> None:
    eval_file(tmp_path)
    path = tmp_path / "probes.toml"
    path.write_text(
        '[[backends]]\nkind = "simulated"\nname = "mini"\n[probe]\nhttp = false\n'
        '[eval]\nfile = "watch.toml"\ndaily_budget = 0.5\n'
    )
    cfg = ProbeConfig.load(path)
    assert cfg.eval is not None and cfg.eval.file == str(tmp_path / "watch.toml")
    assert ProbeDaemon(cfg).eval is not None


def test_a_missing_eval_file_is_a_config_error_at_its_key(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        ProbeDaemon(config(tmp_path / "missing.toml"))
    assert info.value.path == "$.eval.file" and "missing.toml" in str(info.value)


def test_an_error_inside_the_eval_file_names_that_file_and_key(tmp_path: Path) -> None:
    path = eval_file(tmp_path, bar=1.5)
    with pytest.raises(PolicyError) as info:
        ProbeDaemon(config(path))
    assert info.value.source == str(path) and info.value.path == "$.classes.sum.min_pass_rate"


def test_no_class_with_a_backend_probed_here_is_an_error(tmp_path: Path) -> None:
    path = eval_file(tmp_path, classes='candidates = ["elsewhere"]\n')
    with pytest.raises(PolicyError, match="no task class") as info:
        ProbeDaemon(config(path))
    assert info.value.path == "$.eval"


def test_check_validates_the_eval_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        f'[[backends]]\nkind = "simulated"\nname = "mini"\n[eval]\nfile = "{eval_file(tmp_path)}"\ndaily_budget = 0.5\n'
    )
    assert probe_main(["--config", str(good), "--check"]) == 0
    assert "eval 'watch': 1 class(es) on mini" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[backends]]\nkind = "simulated"\nname = "mini"\n[eval]\nfile = "nowhere.toml"\ndaily_budget = 0.5\n'
    )
    assert probe_main(["--config", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "$.eval.file" in err


# -- the schedule --------------------------------------------------------------------------------


async def test_runs_start_every_interval_exactly(tmp_path: Path) -> None:
    model = Model()
    async with running(config(eval_file(tmp_path)), [backend(model)]) as daemon:
        await anyio.sleep(2 * HOUR + 10.0)
        assert daemon.eval is not None and daemon.eval.runs == 3
    first_answers = [min(t for t in model.calls if t // HOUR == k) for k in (0, 1, 2)]
    assert first_answers == [0.1, HOUR + 0.1, 2 * HOUR + 0.1]  # sent at 0, 1 h, 2 h; answered 0.1 s later
    assert len(model.calls) == 30  # 10 cases, one call each, per run


async def test_a_run_that_overruns_is_followed_at_once_and_runs_never_overlap(tmp_path: Path) -> None:
    model = Model()
    slow = backend(model, latency=500.0)  # 10 calls one at a time: 5000 s, longer than the 3600 s interval
    async with running(config(eval_file(tmp_path), "timeout = 600.0\n"), [slow]) as daemon:
        await anyio.sleep(10_000.0 + 1.0)
        assert daemon.eval is not None and daemon.eval.runs == 3
    assert model.calls[9:11] == [5000.0, 5500.0]  # run 1's last answer at 5000 s; run 2 starts then
    assert all(b - a == 500.0 for a, b in zip(model.calls, model.calls[1:], strict=False))  # one call at a time


async def test_shutdown_cancels_a_run_in_flight(tmp_path: Path) -> None:
    model = Model()
    cfg = config(eval_file(tmp_path), "timeout = 600.0\n")
    with anyio.fail_after(1000.0):
        async with running(cfg, [backend(model, latency=100.0, price=1000.0)]) as daemon:
            await anyio.sleep(150.0)  # the second call is in flight
            assert daemon.eval is not None and daemon.eval.running
    assert daemon.eval is not None and not daemon.eval.running and daemon.eval.runs == 1
    assert anyio.current_time() == pytest.approx(150.0)  # cancelled at once, nothing waited for
    assert daemon.eval.budget.spent == pytest.approx(2 * 0.01)  # the cancelled call is charged its worst case
    assert daemon.eval.budget.reserved == 0.0


async def test_sample_rotates_through_the_dataset(tmp_path: Path) -> None:
    model = Model()
    seen: list[str] = []
    original = model.reply

    def reply(query: Query) -> str:
        if "eval_case" in query.metadata:
            seen.append(str(query.metadata["eval_case"]))
        return original(query)

    model.reply = reply  # type: ignore[method-assign]
    async with running(config(eval_file(tmp_path), "sample = 4\n"), [backend(model)]):
        await anyio.sleep(2 * HOUR + 10.0)
    assert seen == [f"sum-{i % 10 + 1}" for i in range(12)]


# -- the daily budget ----------------------------------------------------------------------------


async def test_the_daily_budget_stops_the_eval_exactly_until_the_next_utc_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = Model()
    mini = backend(model, price=1000.0)  # each call: 10 tokens x $1000/M = $0.01, worst case and cost alike
    cfg = config(eval_file(tmp_path), daily_budget=0.035)
    caplog.set_level(logging.INFO, logger="specexec.probes")
    async with running(cfg, [mini]) as daemon:
        assert daemon.eval is not None
        await anyio.sleep(DAY - 1.0)  # 24 runs due on the first day
        assert len(model.calls) == 3 and daemon.eval.runs == 1  # 3 calls fit, the 4th does not
        view = daemon.health_report().eval
        assert view is not None and view.budget.exhausted and view.budget.spent == pytest.approx(0.03)
        assert view.skipped == 7 and view.results["sum"]["mini"].cases == 3
        assert view.results["sum"]["mini"].skipped == 7
        stopped = [r for r in caplog.records if "eval budget" in r.getMessage() and r.levelno == logging.WARNING]
        assert len(stopped) == 1  # said once, not at each of the 23 runs that did nothing
        await anyio.sleep(2.0)  # the next UTC day: the run at 24 h sends again
        assert len(model.calls) == 6 and daemon.eval.runs == 2
        assert min(model.calls[3:]) == DAY + 0.1  # sent at UTC midnight
    assert any("a new UTC day" in r.getMessage() for r in caplog.records)
    assert daemon.eval.budget.total == pytest.approx(0.06)


# -- what is published, and the drift flag ---------------------------------------------------------


async def test_rates_are_published_and_a_drop_below_the_bar_raises_drift(tmp_path: Path) -> None:
    model = Model()
    async with running(config(eval_file(tmp_path)), [backend(model)]) as daemon:
        await anyio.sleep(10.0)
        report = daemon.health_report()
        assert report.eval is not None
        r = report.eval.results["sum"]["mini"]
        assert (r.passed, r.cases, r.pass_rate, r.bar, r.below_bar) == (10, 10, 1.0, 0.9, False)
        assert (r.low, r.high) == wilson(10, 10) and r.last_run_at == WALL0  # when the run started
        assert r.model == "mini-2025-01" and not r.model_changed
        assert not report.backends["mini"].drift and report.backends["mini"].drift_reasons == ()
        assert report.eval.next_run_at == WALL0 + HOUR

        model.good = 8  # the provider rotates weights: 8/10 < 0.9
        await anyio.sleep(HOUR)
        report = daemon.health_report()
        assert report.eval is not None
        r = report.eval.results["sum"]["mini"]
        assert (r.passed, r.cases, r.pass_rate, r.below_bar) == (8, 10, 0.8, True)
        assert (r.low, r.high) == wilson(8, 10)
        assert report.backends["mini"].drift
        assert report.backends["mini"].drift_reasons == ("eval: sum passed 8/10, below its bar 0.9",)

        metrics = parse(daemon.metrics())
        labels = {"task_class": "sum", "backend": "mini"}
        assert ("specexec_eval_pass_rate", labels, 0.8) in metrics["specexec_eval_pass_rate"]
        assert ("specexec_eval_below_bar", labels, 1.0) in metrics["specexec_eval_below_bar"]
        assert ("specexec_eval_bar", labels, 0.9) in metrics["specexec_eval_bar"]
        assert ("specexec_eval_cases", labels, 10.0) in metrics["specexec_eval_cases"]
        low = metrics["specexec_eval_pass_rate_low"][0][2]
        assert low == pytest.approx(wilson(8, 10)[0])
        assert ("specexec_probe_model_drift", {"backend": "mini"}, 1.0) in metrics["specexec_probe_model_drift"]
        assert metrics["specexec_eval_runs_total"][0][2] == 2.0

        model.good = 9  # at the bar again: the flag clears
        await anyio.sleep(HOUR)
        report = daemon.health_report()
        assert not report.backends["mini"].drift and report.backends["mini"].drift_reasons == ()


async def test_a_changed_model_id_raises_drift(tmp_path: Path) -> None:
    model = Model()
    mini = backend(model)
    async with running(config(eval_file(tmp_path)), [mini]) as daemon:
        await anyio.sleep(10.0)
        mini.reported_model = "mini-2025-06"
        await anyio.sleep(HOUR)
        report = daemon.health_report()
    assert report.eval is not None
    r = report.eval.results["sum"]["mini"]
    assert r.model == "mini-2025-06" and r.pinned_model == "mini-2025-01" and r.model_changed and not r.below_bar
    assert "eval: sum answered by model 'mini-2025-06', pinned 'mini-2025-01'" in report.backends["mini"].drift_reasons


async def test_only_the_chosen_backends_are_evaluated(tmp_path: Path) -> None:
    a, b = Model(), Model()
    cfg = config(eval_file(tmp_path), 'backends = ["b"]\n', names=("a", "b"))
    async with running(cfg, [backend(a, "a"), backend(b, "b")]) as daemon:
        await anyio.sleep(10.0)
        report = daemon.health_report()
    assert report.eval is not None and list(report.eval.results["sum"]) == ["b"]
    assert not a.calls and len(b.calls) == 10


async def test_the_snapshot_carries_the_eval_and_a_restart_resumes_it(tmp_path: Path) -> None:
    model = Model(good=5)
    snap = tmp_path / "probes.msgpack"
    cfg = config(eval_file(tmp_path), daily_budget=0.5)
    async with running(cfg, [backend(model, price=1000.0)], snapshot=snap) as daemon:
        await anyio.sleep(10.0)
        decoded = decode_snapshot(encode_snapshot(daemon.snapshot()))
        assert decoded.eval is not None and decoded.eval.results["sum"]["mini"].passed == 5
        assert decoded.backends["mini"].drift
    # a new daemon (the same loop clock: 10 s in) resumes results, drift, budget and schedule
    again = Model(good=5)
    async with running(cfg, [backend(again, price=1000.0)], snapshot=snap) as daemon:
        assert daemon.eval is not None
        report = daemon.health_report()
        assert report.eval is not None and report.eval.results["sum"]["mini"].passed == 5
        assert report.backends["mini"].drift  # before any run of its own
        assert report.eval.budget.spent == pytest.approx(0.1)  # today's spending is not refilled
        await anyio.sleep(HOUR - 10.0 - 1.0)
        assert not again.calls  # the next run is due an interval after the last one started, not at once
        await anyio.sleep(3.0)
        assert len(again.calls) == 10 and daemon.eval.runs == 2 and daemon.eval.round == 2


def test_a_version_2_snapshot_without_eval_still_reads() -> None:
    import msgspec

    budget = {
        "limit": None, "spent": 0.0, "reserved": 0.0, "day": 1, "date": "1970-01-02",
        "exhausted": False, "resets_at": 172800.0, "total": 0.0,
    }  # fmt: skip
    old = {"version": 2, "generated_at": 1.0, "started_at": 0.0, "revision": 1, "window": 60.0}
    snap = decode_snapshot(msgspec.msgpack.encode({**old, "budget": budget, "backends": {}}))
    assert snap.eval is None and snap.version == 2


# -- a service reads it through HealthFeed --------------------------------------------------------


async def test_a_service_sees_a_drop_below_the_bar_through_the_feed(tmp_path: Path) -> None:
    model = Model()
    snap = tmp_path / "probes.msgpack"
    cfg = config(eval_file(tmp_path), probe="snapshot_interval = 60.0\n")
    service_backend = SimulatedBackend("mini", 0.1)
    feed = HealthFeed(snap, max_age=3 * HOUR, wall_clock=wall)
    async with running(cfg, [backend(model)], snapshot=snap), Runtime([service_backend]) as service:
        await anyio.sleep(70.0)  # the first run is done and a snapshot written
        assert await feed.poll_once(service)
        result = feed.eval_result("sum", "mini")
        assert result is not None and result.pass_rate == 1.0 and not result.below_bar
        remote = feed.remote("mini")
        assert remote is not None and not remote.drift

        model.good = 7
        await anyio.sleep(HOUR)
        assert await feed.poll_once(service)
        result = feed.eval_result("sum", "mini")
        assert result is not None and (result.passed, result.cases, result.bar) == (7, 10, 0.9)
        assert result.below_bar and (result.low, result.high) == wilson(7, 10)
        found = feed.eval()
        assert found is not None and found.below_bar() == [("sum", "mini")] and found.runs == 2
        remote = feed.remote("mini")
        assert remote is not None and remote.drift
        assert remote.drift_reasons == ("eval: sum passed 7/10, below its bar 0.9",)
        # information only: the service's own view of the backend is untouched
        assert service.health("mini").breaker.state(anyio.current_time()) == "closed"
        assert service.health("mini").last_model is None


# -- found while wiring it in ---------------------------------------------------------------------


def test_a_judge_backend_the_daemon_does_not_probe_is_a_config_error(tmp_path: Path) -> None:
    text = (
        eval_file(tmp_path)
        .read_text()
        .replace('scorer = { kind = "numeric" }', 'scorer = { kind = "llm_judge", backend = "judge" }')
    )
    path = tmp_path / "watch.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match="'judge'") as info:
        ProbeDaemon(config(path))
    assert info.value.source == str(path) and info.value.path == "$.classes.sum.scorer.backend"


async def test_a_judge_backend_probed_here_judges_the_answers(tmp_path: Path) -> None:
    text = (
        eval_file(tmp_path)
        .read_text()
        .replace(
            'scorer = { kind = "numeric" }', 'scorer = { kind = "llm_judge", backend = "judge" }\ncandidates = ["mini"]'
        )
    )
    path = tmp_path / "watch.toml"
    path.write_text(text)
    model = Model()
    judge = SimulatedBackend("judge", 0.1, reply="9", model="judge-1")
    async with running(config(path, names=("mini", "judge")), [backend(model), judge]) as daemon:
        await anyio.sleep(10.0)
        report = daemon.health_report()
    assert report.eval is not None and list(report.eval.results["sum"]) == ["mini"]
    r = report.eval.results["sum"]["mini"]
    assert (r.passed, r.cases, r.errors) == (10, 10, 0)  # judged 9/10 >= 0.7 each, not "judge failed"


async def test_a_run_that_raises_is_logged_and_the_schedule_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import specexec.bench.eval as eval_library

    real = eval_library.run_round
    calls = {"n": 0}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in a scorer")
        return await real(*args, **kwargs)

    monkeypatch.setattr(eval_library, "run_round", flaky)
    model = Model()
    async with running(config(eval_file(tmp_path)), [backend(model)]) as daemon:
        await anyio.sleep(HOUR + 10.0)
        assert daemon.eval is not None and daemon.eval.runs == 2 and daemon.eval.failed_runs == 1
        report = daemon.health_report()
    assert report.eval is not None and report.eval.results["sum"]["mini"].cases == 10
    assert any("run 1 of watch failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_restart_with_another_eval_file_keeps_todays_spending(tmp_path: Path) -> None:
    snap = tmp_path / "probes.msgpack"
    first = eval_file(tmp_path)
    async with running(config(first, daily_budget=0.5), [backend(Model(), price=1000.0)], snapshot=snap):
        await anyio.sleep(10.0)
    other = tmp_path / "other"
    other.mkdir()
    second = eval_file(other)
    async with running(config(second, daily_budget=0.5), [backend(Model(), price=1000.0)], snapshot=snap) as d:
        assert d.eval is not None
        assert d.eval.budget.spent == pytest.approx(0.1)  # the budget is the daemon's, whatever the file
        await anyio.sleep(10.0)  # the other file's results are not taken: its first run is at start
        assert d.eval.runs == 1 and d.eval.budget.spent == pytest.approx(0.2)


async def test_what_a_failed_run_spent_is_in_the_eval_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a run that raised after its calls were paid left them out of the eval's cost (the
    # specexec_eval_cost_usd_total metric), while the budget had counted them.
    import specexec.bench.eval as eval_library

    real = eval_library.run_round

    async def pays_then_fails(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise RuntimeError("a bug after the calls")

    monkeypatch.setattr(eval_library, "run_round", pays_then_fails)
    async with running(config(eval_file(tmp_path)), [backend(Model(), price=1000.0)]) as daemon:
        await anyio.sleep(10.0)
        assert daemon.eval is not None and daemon.eval.failed_runs == 1
        assert daemon.eval.budget.total > 0 and daemon.eval.cost == pytest.approx(daemon.eval.budget.total)
