"""The resumable cache: one JSON line per case × model × prompt hash (answers, not verdicts:
rescoring is free, so a changed scorer or bar never resends a case). Only answers are kept: a
call that failed (an outage, a timeout) is sent again by the next run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

__all__ = ["Answer", "Cache", "cache_key"]


class Answer(msgspec.Struct, frozen=True):
    """What one candidate answered to one case (``error`` set when it failed)."""

    key: str
    text: str
    latency: float
    cost: float
    model: str | None = None
    error: str | None = None


def cache_key(cls: str, case: str, backend: str, fingerprint: str, prompt_hash: str) -> str:
    """The cache key of a case × model × prompt (``fingerprint``: the backend's configuration)."""
    raw = msgspec.json.encode([cls, case, backend, fingerprint, prompt_hash])
    return hashlib.sha256(raw).hexdigest()[:32]


class Cache:
    """Answers by key, read from and appended to ``path`` (``None``: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.answers: dict[str, Answer] = {}
        self._torn = False  # the file ends inside a line: the next append starts a new one
        if path is not None and path.exists():
            decoder = msgspec.json.Decoder(Answer)
            data = path.read_bytes()
            self._torn = bool(data) and not data.endswith(b"\n")
            for line in data.splitlines():
                try:
                    answer = decoder.decode(line)
                except msgspec.DecodeError:
                    continue  # a line cut short by an interrupted run: that case is sent again
                self.answers[answer.key] = answer

    def get(self, key: str) -> Answer | None:
        """The cached answer, if any."""
        return self.answers.get(key)

    def put(self, answer: Answer) -> None:
        """Keep ``answer`` (and append it to the file at once, so an interrupted run resumes)."""
        self.answers[answer.key] = answer
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as f:
                f.write((b"\n" if self._torn else b"") + msgspec.json.encode(answer) + b"\n")
            self._torn = False
