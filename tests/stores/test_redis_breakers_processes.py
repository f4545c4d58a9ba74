"""Shared circuit breakers across real processes: one trips backend ``b``, the other sees it open
within the staleness bound and does not call it; after the cooldown the fleet sends one trial;
Redis killed → each runs on its local breaker (logged once); Redis back → sharing resumes.

Each worker is a real Python process with its own runtime, driven by commands on stdin and
answering one JSON line per command, so the test orders events without sleeping; waits are
bounded polls inside the workers. Timings are wall-clock (``time.time()``, one machine).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from specexec.bench.redis_server import RedisServer

INTERVAL = 0.05  # the workers' sync interval: seen within one (the reader's next sync), at worst two

WORKER = textwrap.dedent(
    """
    import json, logging, sys, time
    import anyio, anyio.to_thread
    import specexec
    from specexec.stores import RedisRateLimits

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    url, loop, cooldown, interval = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

    class Provider:
        def __init__(self):
            self.fail = False
            self.calls = []  # (start, end) wall-clock

        async def __call__(self, query):
            start = time.time()
            try:
                if self.fail:
                    raise specexec.Unavailable("down")
                await anyio.sleep(0.2)
                return "ok"
            finally:
                self.calls.append((start, time.time()))

    def say(**fields):
        print(json.dumps(fields), flush=True)

    async def main():
        shared = RedisRateLimits(url, breakers=True, interval=interval, timeout=2.0)  # a loaded machine is no outage
        provider = Provider()
        config = specexec.BreakerConfig(failure_threshold=2, cooldown=cooldown)
        policy = specexec.Policy.single("b", panic=False)
        backend = specexec.CallableBackend("b", provider, breaker=config)
        async with specexec.Runtime([backend], shared_limits=shared) as rt:
            breaker = rt.health("b").breaker

            def state():
                return breaker.state(anyio.current_time())

            async def run():
                try:
                    await rt.run("q", policy)
                    return "ok"
                except specexec.NoAcceptableResponse:
                    return "failed"

            say(ready=True)
            while True:
                words = (await anyio.to_thread.run_sync(sys.stdin.readline)).split()
                if not words or words[0] == "quit":
                    break
                if words[0] in ("fail", "heal"):
                    provider.fail = words[0] == "fail"
                    say(done=words[0])
                elif words[0] == "trip":
                    provider.fail = True
                    outcomes = [await run(), await run()]
                    say(outcomes=outcomes, state=state(), at=time.time())
                elif words[0] == "wait-open":  # a bounded poll of the local breaker
                    with anyio.move_on_after(float(words[1])):
                        while state() == "closed":
                            await anyio.sleep(0.002)
                    say(state=state(), reason=breaker.open_reason, at=time.time())
                elif words[0] == "runs":
                    outcomes = [await run() for _ in range(int(words[1]))]
                    say(outcomes=outcomes, calls=len(provider.calls))
                elif words[0] == "hammer":  # a run every 10 ms until n succeeded, at most t seconds
                    n, ok = int(words[1]), 0
                    with anyio.move_on_after(float(words[2])):
                        while ok < n:
                            if await run() == "ok":
                                ok += 1
                            else:
                                await anyio.sleep(0.01)
                    say(ok=ok, calls=provider.calls)
        await shared.aclose()

    anyio.run(main, backend=loop)
    """
)


class Worker:
    """One worker process: ``ask(command)`` sends a line and returns the JSON answer (bounded wait)."""

    def __init__(self, url: str, loop: str, cooldown: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, loop, str(cooldown), str(INTERVAL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._pump, args=(self.process.stdout, self._lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self._stderr.append), daemon=True).start()
        assert self.answer(timeout=60) == {"ready": True}

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            return dict(json.loads(self._lines.get(timeout=timeout)))
        except queue.Empty:
            raise AssertionError(f"no answer in {timeout}s; stderr: {''.join(self._stderr)[-2000:]}") from None

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.answer()

    def stop(self) -> str:
        """Quit and return everything the worker logged."""
        if self.process.poll() is None:
            self.send("quit")
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return "".join(self._stderr)


@pytest.fixture
def workers(redis_server: RedisServer, request: pytest.FixtureRequest) -> Any:
    made: list[Worker] = []

    def make(loop: str, cooldown: float) -> Worker:
        made.append(Worker(redis_server.url, loop, cooldown))
        return made[-1]

    yield make
    for w in made:
        w.stop()


@pytest.mark.parametrize("loops", [("trio", "asyncio"), ("asyncio", "trio")])
def test_one_process_trips_the_other_sees_it_open_then_the_fleet_sends_one_trial(
    workers: Any, loops: tuple[str, str]
) -> None:
    tripper, other = workers(loops[0], 1.0), workers(loops[1], 1.0)
    other.send("wait-open 10")
    tripped = tripper.ask("trip")
    assert tripped["outcomes"] == ["failed", "failed"] and tripped["state"] == "open"
    seen = other.answer()
    assert (seen["state"], seen["reason"]) == ("open", "failures")
    staleness = seen["at"] - tripped["at"]
    print(f"seen open {staleness * 1000:.0f} ms after the trip (interval {INTERVAL * 1000:.0f} ms)")
    assert staleness < 2 * INTERVAL + 0.25  # the worst-case bound, plus scheduling slack on a loaded machine
    refused = other.ask("runs 5")
    assert refused == {"outcomes": ["failed"] * 5, "calls": 0}  # it never called the open backend

    tripper.ask("heal")
    other.ask("heal")
    tripper.send("hammer 3 20")
    other.send("hammer 3 20")
    mine, theirs = tripper.answer(), other.answer()
    assert mine["ok"] == theirs["ok"] == 3  # both try again after the cooldown, and get answers
    calls = sorted([tuple(c) for c in mine["calls"][2:]] + [tuple(c) for c in theirs["calls"]])
    trial = calls[0]
    assert trial[0] >= tripped["at"] + 1.0 - 0.05  # not before the cooldown ends (Redis's clock vs ours)
    assert calls[1][0] >= trial[1]  # one trial for the fleet: nothing else starts while it is out
    print(f"trial at +{trial[0] - tripped['at']:.3f}s, next call +{calls[1][0] - trial[1]:.3f}s after it")


@pytest.mark.parametrize("loops", [("trio", "asyncio")])
def test_redis_killed_each_runs_its_local_breaker_and_sharing_resumes(
    workers: Any, redis_server: RedisServer, loops: tuple[str, str]
) -> None:
    tripper, other = workers(loops[0], 60.0), workers(loops[1], 60.0)
    redis_server.stop()
    tripped = tripper.ask("trip")
    assert tripped["state"] == "open"
    assert other.ask("runs 3") == {"outcomes": ["ok"] * 3, "calls": 3}  # its local breaker is closed
    assert tripper.ask("runs 2") == {"outcomes": ["failed"] * 2, "calls": 2}  # its own is open
    redis_server.start()
    seen = other.ask("wait-open 10")  # the trip made during the outage is published on recovery
    assert seen["state"] == "open"
    assert other.ask("runs 2") == {"outcomes": ["failed"] * 2, "calls": 3}
    for w in (tripper, other):
        log = w.stop()
        assert log.count("unreachable") == 1, log  # once per outage, however many syncs failed
        assert log.count("answers again") == 1, log
