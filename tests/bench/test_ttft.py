"""``specexec bench ttft``: TTFT measured beside total latency, the closed-form limit, the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from specexec.bench.bench import main as bench_main
from specexec.bench.bench._stats import Stats
from specexec.bench.bench._tail import fixed_delay_analysis
from specexec.bench.bench._ttft import TTFT, fixed_delay_limit, main, scenario, simulate_ttft


def _draw_ttft(rng: np.random.Generator, n: int) -> np.ndarray:
    """``TTFT`` by numpy: lognormal(300 ms, σ 0.3), ×8 with probability 5 %."""
    base = 0.3 * np.exp(0.3 * rng.standard_normal(n))
    return np.where(rng.random(n) < 0.05, base * 8.0, base)


def test_the_closed_form_limit_matches_a_monte_carlo_of_fixed_delay_hedging() -> None:
    limit = fixed_delay_limit(0.05)
    assert limit["extra_load"] == pytest.approx(0.05, abs=1e-6)
    rng = np.random.default_rng(7)
    n, d = 400_000, limit["delay"]
    x = np.stack([_draw_ttft(rng, n) + k * d for k in range(3)])
    first = x.min(axis=0)
    assert np.quantile(first, 0.99) == pytest.approx(limit["p99"], rel=0.02)
    extra = np.mean(x[0] > d) + np.mean((x[0] > 2 * d) & (x[1] > 2 * d))
    assert extra == pytest.approx(0.05, abs=0.002)


def test_the_limit_gets_lower_with_more_load() -> None:
    cheap, dear = fixed_delay_limit(0.02), fixed_delay_limit(0.10)
    assert dear["delay"] < cheap["delay"] and dear["p99"] < cheap["p99"]
    assert fixed_delay_analysis(TTFT, dear["delay"])["extra_load"] == pytest.approx(0.10, abs=1e-6)


def test_stats_keep_ttft_through_shipping() -> None:
    s = Stats()
    s.record(1.0, None, None, None, ttft=0.25)
    s.record(2.0, None, None, None)  # no TTFT reported: latency only
    back = Stats.from_builtins(s.to_builtins())
    summary = back.summary()
    assert summary.ttft is not None and summary.ttft["p50"] == pytest.approx(0.25, rel=1e-3)
    assert back.latency.get_total_count() == 2 and back.ttft.get_total_count() == 1
    assert Stats().summary().ttft is None


def test_a_short_run_reports_ttft_for_run_and_stream_policies() -> None:
    sc = scenario(requests=400)
    summaries = {name: simulate_ttft(sc, name).total.summary() for name in ("single", "hedge-ttft", "race")}
    for name, s in summaries.items():
        assert s.ok == 400, name
        assert s.ttft is not None and s.ttft["p50"] is not None, name
        assert s.ttft["p50"] < s.latency["p50"]  # type: ignore[operator]  # 15 tokens come after the first
    assert summaries["race"].ttft["p99"] < summaries["single"].ttft["p99"]  # type: ignore[index,operator]
    assert summaries["race"].extra_load == pytest.approx(2.0)


def test_the_same_seed_gives_the_same_figures() -> None:
    sc = scenario(requests=200)
    a, b = (simulate_ttft(sc, "hedge-ttft").total.summary() for _ in range(2))
    assert a.ttft == b.ttft and a.latency == b.latency and a.cost_total == b.cost_total


def test_cli_prints_the_table_the_limit_and_the_targets() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert bench_main(["ttft", "--requests", "300"], stdout=out, stderr=err) == 0
    text = out.getvalue()
    assert "hedge-ttft" in text and "TTFT ms" in text and "total ms" in text
    assert "fixed-delay hedging limit" in text
    assert "TTFT p99 within 10 % of the fixed-delay limit" in text


def test_cli_json_and_bad_arguments() -> None:
    out = io.StringIO()
    assert main(["--requests", "200", "--policies", "hedge-total,hedge-ttft", "--json"], stdout=out) == 0
    doc = json.loads(out.getvalue())
    assert set(doc["summaries"]) == {"hedge-total", "hedge-ttft"}
    assert {t["what"] for t in doc["targets"]} >= {"hedge-ttft extra load ≤ 6 %"}
    err = io.StringIO()
    assert main(["--policies", "nope"], stdout=io.StringIO(), stderr=err) == 2
    assert "unknown policy" in err.getvalue()


def test_list_shows_the_ttft_scenario() -> None:
    out = io.StringIO()
    assert bench_main(["--list"], stdout=out) == 0
    assert "\nttft\n" in out.getvalue()


def test_live_runs_every_policy_streamed_over_loopback() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--live", "--requests", "10", "--warmup", "0"], stdout=out, stderr=err) == 0, err.getvalue()
    for name in ("single", "hedge-total", "hedge-ttft", "race"):
        assert name in out.getvalue()


def test_cancelled_attempts_are_charged_by_the_tokens_they_received() -> None:
    import trio
    import trio.testing

    import specexec
    from specexec.bench.bench._driver import received_cost
    from specexec.bench.bench._ttft import backends

    found: dict[str, float] = {}

    async def go() -> None:
        rt = specexec.Runtime(backends(1))
        q = "What is 2 + 2?"
        async with rt.stream(q, specexec.Policy.race(["a", "b", "c"])) as s:
            async for _ in s:
                pass
        trace = s.result.trace
        winner = next(a for a in trace.attempts if a.outcome == "accepted")
        losers = [a for a in trace.attempts if a.outcome == "cancelled"]
        assert len(losers) == 2 and all(a.output_tokens == 0 for a in losers)
        found["charged"], found["winner"] = trace.cost, winner.cost
        found["received"] = received_cost(trace, rt, specexec._query.as_query(q))
        found["input"] = winner.input_tokens * 0.15 / 1e6

    trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    assert found["received"] == pytest.approx(found["winner"] + 2 * found["input"])
    assert found["charged"] > found["received"]  # the engine charged the losers their reservation


def test_stats_ship_the_received_cost() -> None:
    s = Stats()
    s.record(1.0, None, None, None, ttft=0.2, received_cost=0.5)
    s.record(1.0, None, None, None, ttft=0.2, received_cost=1.5)
    assert Stats.from_builtins(s.to_builtins()).summary().cost_received_mean == pytest.approx(1.0)
    assert Stats().summary().cost_received_mean is None


def test_warmup_requests_are_sent_but_not_counted() -> None:
    from specexec.bench.bench._ttft import LIVE_WARMUP, _parser

    out = io.StringIO()
    args = ["--requests", "150", "--warmup", "100", "--policies", "single,hedge-ttft", "--json"]
    assert main(args, stdout=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["warmup"] == 100 and doc["requests"] == 150
    assert all(s["requests"] == 150 for s in doc["summaries"].values())
    warm = scenario(requests=150, warmup=100)
    assert warm.workload.warmup == 100 and warm.workload.expected_requests() == 150
    # the same first 150 measured requests of a cold run are not those of a warm one: the warm
    # run's hedge delay comes from a histogram that already holds 100 requests
    cold = simulate_ttft(scenario(requests=150), "hedge-ttft").total.summary()
    assert simulate_ttft(warm, "hedge-ttft").total.summary().ttft != cold.ttft
    # live, the default warm-up is LIVE_WARMUP requests; virtual time, none
    assert _parser().parse_args(["--live"]).warmup is None and LIVE_WARMUP == 1_000
    err = io.StringIO()
    assert main(["--warmup", "-1"], stdout=io.StringIO(), stderr=err) == 2
    assert "--warmup" in err.getvalue()


def test_the_text_report_says_how_many_warm_up_requests_were_not_counted() -> None:
    out = io.StringIO()
    assert main(["--requests", "100", "--warmup", "50", "--policies", "single"], stdout=out) == 0
    assert "100 requests per policy (after 50 warm-up requests, not counted)" in out.getvalue()


def test_live_backends_get_the_default_pool_per_deployment() -> None:
    # the fleet serves every deployment from one host:port, where the HTTP backends share one
    # pool per host: the three "independent providers" must not share one provider's 100 connections
    from specexec.backends._http import DEFAULT_MAX_CONNECTIONS
    from specexec.bench.bench._ttft import fleet, live_backends

    sc = scenario(requests=10)
    config = fleet(sc)
    urls = {d.name: f"http://127.0.0.1:1/{d.name}/v1" for d in config.deployments}
    made = live_backends(config, urls, timeout=5.0)
    assert [b.name for b in made] == ["a", "b", "c"]
    for b in made:
        assert b.http.max_connections == DEFAULT_MAX_CONNECTIONS * 3
        assert b.http.max_keepalive_connections == DEFAULT_MAX_CONNECTIONS * 3
        assert b.http.trust_env is False and b.streaming


def test_the_driver_counts_requests_sent_late() -> None:
    import msgspec

    on_time = simulate_ttft(scenario(requests=100), "single")
    assert (on_time.late_sends, on_time.max_send_lag) == (0, 0.0)  # virtual time: never late
    sc = scenario(requests=100)
    one_at_a_time = msgspec.structs.replace(sc, workload=msgspec.structs.replace(sc.workload, max_in_flight=1))
    behind = simulate_ttft(one_at_a_time, "single")  # 100/s, 0.3 s each, one at a time: falls behind
    assert behind.late_sends > 90 and behind.max_send_lag > 10.0
    back = type(behind).from_builtins(behind.to_builtins())
    assert (back.late_sends, back.max_send_lag) == (behind.late_sends, behind.max_send_lag)


def test_the_report_warns_when_the_load_generator_fell_behind() -> None:
    from specexec.bench.bench._ttft import lag_warning

    assert lag_warning({"single": (0, 0.0, 3000)}) is None
    text = lag_warning({"single": (2, 0.08, 3000), "race": (900, 31.5, 3000)})
    assert text is not None and "race" in text and "31.5 s" in text and "30.0 %" in text
    assert "single" not in text  # 2 of 3,000 late is noise
