"""``SharedBreaker``'s local side, exactly, on plain clock values (no event loop, no Redis): what it
publishes, how it takes the fleet's episode, and that unshared it is the in-process breaker."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from specexec._health import BreakerConfig, CircuitBreaker
from specexec.stores import SharedBreaker

CONFIG = BreakerConfig(failure_threshold=2, cooldown=10.0)

# the script's arguments per breaker: owner, local ms, reason, fresh, closed gen, wants, gen
LOCAL_MS, REASON, FRESH, CLOSED, WANTS, GEN = 1, 2, 3, 4, 5, 6


def synced(breaker: SharedBreaker, now: float, reply: list[object]) -> list[object]:
    """One sync at ``now`` that Redis answers with ``reply``; returns what was published."""
    args, mark = breaker.outgoing(now)
    breaker.merge(now, mark, reply)
    return args


def test_the_fleets_open_is_placed_on_the_local_clock() -> None:
    breaker = SharedBreaker("k", CONFIG)
    synced(breaker, 100.0, [7, 1, 5000, b"auth", 0])
    assert breaker.shared and breaker.gen == 7
    assert (breaker.state(104.999), breaker.state(105.0)) == ("open", "half_open")
    assert breaker.open_until == 105.0 and breaker.open_reason == "auth"
    synced(breaker, 101.0, [8, 0, -1000, b"", 0])  # the fleet closed it
    assert breaker.state(101.0) == "closed" and breaker.open_reason is None


def test_a_local_trip_is_published_once_with_its_remaining_time() -> None:
    breaker = SharedBreaker("k", CONFIG)
    breaker.on_failure(50.0)
    breaker.on_failure(50.0)  # opens until 60.0
    args = synced(breaker, 52.5, [3, 1, 7500, b"failures", 0])
    assert (args[LOCAL_MS], args[REASON], args[FRESH]) == (7500, "failures", 1)
    assert synced(breaker, 53.0, [3, 1, 7000, b"failures", 0])[FRESH] == 0  # a mirror, not news
    breaker.on_failure(54.0, retry_after=30.0)  # a longer open while open: news again
    assert synced(breaker, 54.0, [3, 1, 30000, b"failures", 0])[FRESH] == 1


def test_shared_and_half_open_only_the_trial_holder_admits_one_attempt() -> None:
    breaker = SharedBreaker("k", CONFIG)
    synced(breaker, 100.0, [7, 1, -1, b"failures", 0])  # half-open for the fleet, the lease elsewhere
    assert not breaker.would_allow(100.0) and not breaker.allow(100.0)
    args = synced(breaker, 100.1, [7, 1, -101, b"failures", 1])  # asks for the lease, and gets it
    assert args[WANTS] == 1 and breaker.holds_trial
    assert breaker.would_allow(100.2) and breaker.allow(100.2)
    assert not breaker.allow(100.2)  # one trial
    assert synced(breaker, 100.3, [7, 1, -301, b"failures", 1])[WANTS] == 1  # in flight: keeps the lease
    breaker.on_success(100.4)
    args = synced(breaker, 100.5, [8, 0, -8, b"", 0])
    assert args[CLOSED] == 7 and args[LOCAL_MS] == ""  # the close of episode 7
    assert breaker.state(100.5) == "closed"


def test_a_transition_while_the_script_runs_is_kept_for_the_next_sync() -> None:
    breaker = SharedBreaker("k", CONFIG)
    _, mark = breaker.outgoing(10.0)
    breaker.trip(10.0, 30.0, "probe")  # while Redis answers "closed"
    breaker.merge(10.0, mark, [0, 0, 0, b"", 0])
    assert breaker.state(39.9) == "open"
    assert synced(breaker, 11.0, [1, 1, 29000, b"probe", 0])[FRESH] == 1


def test_what_an_outage_kept_from_redis_is_published_when_it_answers() -> None:
    breaker = SharedBreaker("k", CONFIG)
    synced(breaker, 0.0, [5, 1, 1000, b"failures", 1])
    breaker.trip(0.5, 20.0, "failures")
    _, mark = breaker.outgoing(0.5)
    breaker.unshared(mark)  # the sync failed
    assert not breaker.shared and not breaker.holds_trial
    assert synced(breaker, 1.0, [6, 1, 19500, b"failures", 0])[FRESH] == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["failure", "success", "cancel", "allow", "would_allow", "retry_after", "trip"]),
            st.floats(0.0, 8.0),
        ),
        max_size=60,
    )
)
def test_unshared_it_is_the_in_process_breaker(events: list[tuple[str, float]]) -> None:
    local, shared = CircuitBreaker(CONFIG), SharedBreaker("k", CONFIG)
    now = 0.0
    for op, step in events:
        now += step
        results = []
        for b in (local, shared):
            if op == "failure":
                b.on_failure(now)
            elif op == "retry_after":
                b.on_failure(now, retry_after=step)
            elif op == "success":
                b.on_success(now)
            elif op == "cancel":
                b.on_cancel(now)
            elif op == "trip":
                b.trip(now, step, "probe")
            results.append((b.allow(now) if op == "allow" else b.would_allow(now), b.state(now), b.open_until))
        assert results[0] == results[1]
