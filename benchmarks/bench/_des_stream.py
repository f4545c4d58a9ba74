"""Streams (``runtime.stream``) in the discrete-event ``--sim`` driver: ``_engine``'s
``_stream_attempt`` as events.

A streamed attempt is drawn at its launch (``SimulatedBackend.draw_stream``: the TTFT, the gaps
and the pieces, or the fault, or a stall) and read piece by piece: each piece of text is an
event at its time on the virtual clock, summed sleep by sleep as ``stream`` would sleep. The
engine's rules come with it, all decided by the same ``Core``: the first token must come
within ``attempt_timeout`` and each next one within ``stall_timeout`` (else ``Timeout``); with
``commit="first_token"`` the first attempt whose first ``prefix_chars`` characters pass
``verify_prefix`` commits (its text so far is forwarded to the caller, every other attempt is
cancelled), with ``commit="complete"`` the first whole answer that passes ``verify``; a
rejection launches the next; a committed stream is verified after commit when it ends.
Everything at one instant happens in one go (the trio driver may interleave other tasks there,
at no later time), so the figures are the trio virtual-time driver's
(``tests/bench/test_des_stream.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specexec import SimulatedBackend, Timeout
from specexec._core import CANCEL_ALL, Attempt
from specexec._query import Response
from specexec.verifiers import check

from ._des import _SimRun, run_now

__all__ = ["StreamRun"]


class _Reader:
    """One streamed attempt being read: its draw, the next piece, the stall deadline."""

    __slots__ = ("attempt", "backend", "gaps", "next", "pieces")

    def __init__(self, attempt: Attempt, backend: SimulatedBackend, gaps: list[float], pieces: list[str]) -> None:
        self.attempt = attempt
        self.backend = backend
        self.gaps = gaps
        self.pieces = pieces
        self.next = 0  # the index of the next piece


class StreamRun(_SimRun):
    """One streamed request: ``_SimRun`` with each attempt read as a stream of piece events."""

    __slots__ = ()

    # -- launching ---------------------------------------------------------------------------

    def _start(self, attempt: Attempt) -> None:
        backend = attempt.state.backend
        if not isinstance(backend, SimulatedBackend):
            raise TypeError(f"backend {attempt.state.name!r} is not simulated: the discrete-event driver draws calls")
        if backend.ttft is None:  # a whole answer as one chunk (the engine's `_whole`)
            self._start_whole(attempt, backend)
            return
        now = self.loop.now
        draw = backend.draw_stream(self.query, now)
        outcome = draw.outcome
        deadline = self._first_token_deadline(attempt, now)
        if outcome is None:  # a stall: only the first-token timeout (or a cancel) ends it
            attempt.handle = _Reader(attempt, backend, [], [])
            if deadline is not None:
                self.loop.at(deadline, self._timed_out, (attempt.handle, self._first_token_late()))
            return
        t = now + draw.ttft
        if not isinstance(outcome, list):  # a fault, before any text
            attempt.handle = outcome
            if deadline is not None and t >= deadline:
                attempt.handle = _Reader(attempt, backend, [], [])
                self.loop.at(deadline, self._timed_out, (attempt.handle, self._first_token_late()))
            else:
                self.loop.at(t, self._attempt_fails, attempt)
            return
        reader = _Reader(attempt, backend, draw.gaps, outcome)
        attempt.handle = reader
        self._schedule_next(reader, t, deadline, self._first_token_late())

    def _start_whole(self, attempt: Attempt, backend: SimulatedBackend) -> None:
        """A backend without ``ttft`` streams its whole answer as one piece at its end."""
        now = self.loop.now
        delay, outcome = backend.draw(self.query, now)
        deadline = self._first_token_deadline(attempt, now)
        end = now + delay
        if deadline is not None and end >= deadline:
            attempt.handle = _Reader(attempt, backend, [], [])
            self.loop.at(deadline, self._timed_out, (attempt.handle, self._first_token_late()))
            return
        if outcome is None:
            attempt.handle = _Reader(attempt, backend, [], [])
            return
        if not isinstance(outcome, Response):
            attempt.handle = outcome
            self.loop.at(end, self._attempt_fails, attempt)
            return
        reader = _Reader(attempt, backend, [], [outcome.text])
        attempt.handle = reader
        self.loop.at(end, self._piece, reader)

    def _first_token_deadline(self, attempt: Attempt, now: float) -> float | None:
        """When the first token is late (``attempt_timeout``), the same float as the engine's
        ``move_on_after(started + attempt_timeout - now)``."""
        timeout = self.policy.attempt_timeout
        if timeout is None:
            return None
        return now + (attempt.started + timeout - now)

    def _first_token_late(self) -> str:
        timeout = self.policy.attempt_timeout
        return "" if timeout is None else f"no first token within attempt_timeout={timeout:g}s"

    # -- reading -----------------------------------------------------------------------------

    def _schedule_next(self, reader: _Reader, t: float, deadline: float | None, late: str) -> None:
        """The next piece with text comes at ``t`` after the steps without text (or the stream
        ends there); unless ``deadline`` (the engine waiting for the next chunk) comes first."""
        pieces, gaps, slowdown = reader.pieces, reader.gaps, reader.backend.slowdown
        i = reader.next
        while not pieces[i] and i + 1 < len(pieces):  # steps that bring no text: waited through
            t = t + gaps[i] * slowdown(t)
            i += 1
        reader.next = i
        if deadline is not None and t >= deadline:
            self.loop.at(deadline, self._timed_out, (reader, late))
        else:
            self.loop.at(t, self._piece, reader)

    def _piece(self, reader: _Reader) -> None:
        attempt = reader.attempt
        if self.done or attempt.handle is not reader:
            return
        core, policy, now = self.core, self.policy, self.loop.now
        i = reader.next
        piece = reader.pieces[i]
        if piece:
            parts = attempt.parts
            if not parts:
                core.first_token(attempt, now)
            parts.append(piece)
            if attempt is core.winner:
                self._send()
            elif policy.commit == "first_token" and sum(map(len, parts)) >= policy.prefix_chars:
                prefix = Response("".join(parts), model=None, ttft=attempt.record.ttft)
                if not self._stream_verdict(attempt, policy.verify_prefix, prefix):
                    self._ended(attempt)
                    return
                why = "its prefix passed verify_prefix" if policy.verify_prefix else "first token"
                if not self._commit(attempt, why):
                    self._ended(attempt)
                    return
                self._send()
        if i + 1 < len(reader.pieces):
            reader.next = i + 1
            stall = policy.stall_timeout if attempt.parts else None
            if attempt.parts:
                deadline = None if stall is None else now + stall
                late = f"stream stalled: no new text for {stall}s"
            else:
                deadline, late = self._first_token_deadline(attempt, now), self._first_token_late()
            self._schedule_next(reader, now + reader.gaps[i] * reader.backend.slowdown(now), deadline, late)
            return
        self._stream_ends(attempt, reader)

    def _stream_ends(self, attempt: Attempt, reader: _Reader) -> None:
        """The last chunk (usage, model) came with the last piece: the engine's end of ``_stream_attempt``."""
        core, policy, now, query = self.core, self.policy, self.loop.now, self.query
        attempt.handle = None
        backend = reader.backend  # the last chunk's usage and model (a whole answer's own: the same)
        usage, model = backend.stream_usage(query), backend.reported_model or backend.model
        response = core.stream_done(attempt, usage, model, "stop", (), None, now)
        attempt.record.ended = now - core.t0
        first_token = policy.commit == "first_token"
        if attempt is not core.winner:  # the whole answer decides (shorter than the prefix, or "complete")
            verifiers = policy.verify_prefix if first_token else policy.verify
            if not self._stream_verdict(attempt, verifiers, response):
                self._ended(attempt)
                return
            if not self._commit(attempt, "its whole answer passed" if verifiers else "it answered"):
                self._ended(attempt)
                return
            self._send()
        if first_token and policy.verify:  # what committed it was the prefix: verify still judges the whole
            verdict = run_now(check(policy.verify, query, response), "a verifier")
            detail = "ok" if verdict.accept else verdict.reason
            core.event("verified after commit", f"{attempt.record.backend}: {detail}", now)
        core.stream_succeeded(attempt, now)
        self._ended(attempt)

    # -- failing -----------------------------------------------------------------------------

    def _attempt_fails(self, attempt: Attempt) -> None:
        """The drawn fault, raised before any text."""
        if self.done or not isinstance(attempt.handle, Exception):
            return
        exc, attempt.handle = attempt.handle, None
        self._failed(attempt, exc)

    def _timed_out(self, pair: tuple[_Reader, str]) -> None:
        """The first token (``attempt_timeout``) or the next one (``stall_timeout``) is late."""
        reader, what = pair
        attempt = reader.attempt
        if self.done or attempt.handle is not reader:
            return
        attempt.handle = None
        self._failed(attempt, Timeout(what, backend=attempt.state.name))

    def _failed(self, attempt: Attempt, exc: Exception) -> None:
        if self.core.stream_failed(attempt, exc, self.loop.now) is CANCEL_ALL:
            self.stopping = True
        self._ended(attempt)

    # -- verdicts, commits, the caller --------------------------------------------------------

    def _stream_verdict(self, attempt: Attempt, verifiers: Sequence[Any], response: Response) -> bool:
        """Apply ``verifiers`` to (a prefix of) a streamed answer; a rejection launches the next."""
        if not verifiers:
            return True
        verdict = run_now(check(verifiers, self.query, response), "a verifier")
        if verdict.accept:
            return True
        attempt.handle = None
        self.core.stream_rejected(attempt, verdict, self.loop.now)
        return False

    def _commit(self, attempt: Attempt, why: str) -> bool:
        """Make ``attempt`` the stream the caller reads and cancel every other attempt; False if
        another stream committed first (this one then ends, cancelled)."""
        others = self.core.commit(attempt, why, self.loop.now)
        if others is None:
            attempt.handle = None
            return False
        for other in others:
            other.handle = None
            self._ended(other)
        return True

    def _send(self) -> None:
        """Hand text to the caller (it reads at once): the first time is the stream's TTFT."""
        if self.first_at is None:
            self.first_at = self.loop.now
            self.core.first_delta = self.first_at - self.core.t0
