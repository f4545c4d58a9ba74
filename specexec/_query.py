"""What a run sends (``Query``) and what a backend returns (``Response``)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

DEFAULT_MAX_TOKENS = 256

Role = Literal["system", "user", "assistant", "tool"]


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One chat message."""

    role: Role
    content: str


class Query(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request: messages (or a prompt), generation parameters and request metadata.

    ``Query("text")`` is a single user message. ``tenant`` and ``priority`` are metadata for
    budgets and traces; ``metadata`` is free-form and travels into the trace.
    """

    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    tenant: str | None = None
    priority: int = 0
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt is None and not self.messages:
            raise ValueError("Query needs a prompt or at least one message")
        if self.prompt is not None and self.messages:
            raise ValueError("Query takes a prompt or messages, not both")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"Query.max_tokens must be a positive int, got {self.max_tokens!r}")

    @property
    def chat(self) -> tuple[Message, ...]:
        """The query as chat messages (a prompt becomes one user message)."""
        if self.prompt is not None:
            return (Message("user", self.prompt),)
        return self.messages

    @property
    def text(self) -> str:
        """All message contents joined: what token estimates and simple backends look at."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m.content for m in self.messages)


def as_query(query: str | Query) -> Query:
    """Accept a plain string as a one-message query."""
    if isinstance(query, Query):
        return query
    if isinstance(query, str):
        return Query(prompt=query)
    raise TypeError(f"query must be a str or specexec.Query, got {type(query).__name__}")


class Usage(msgspec.Struct, frozen=True):
    """Tokens used by one response; ``estimated`` when the provider did not report them."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False


class Response(msgspec.Struct, frozen=True):
    """A backend's answer.

    ``model`` is the model id the provider reported (for pinned-version checks); ``ttft`` the
    time to first token in seconds where the answer was streamed; ``raw`` the decoded
    provider payload, for callers that need more than the text.
    """

    text: str
    usage: Usage = Usage()
    model: str | None = None
    ttft: float | None = None
    finish_reason: str | None = None
    raw: Any = None


class StreamChunk(msgspec.Struct, frozen=True):
    """One piece of a streamed answer (what ``Backend.stream`` yields).

    ``text`` is the new text (may be empty); the last chunks of a stream may carry the
    provider's ``usage``, the ``model`` id it reports and the ``finish_reason``.
    """

    text: str = ""
    usage: Usage | None = None
    model: str | None = None
    finish_reason: str | None = None


def estimate_tokens(text: str) -> int:
    """An upper bound on the tokens of ``text`` for cost reservation.

    Byte-pair tokenizers never make more tokens than UTF-8 bytes, so the byte count is a
    safe (pessimistic, ≈ 4× on English) bound: a ceiling computed from it is never crossed.
    Backends that can count exactly implement ``count_input_tokens``.
    """
    return len(text.encode("utf-8"))


def estimate_input_tokens(query: Query) -> int:
    """Upper bound on the prompt tokens of ``query``: its text plus a small per-message framing."""
    chat = query.chat
    return sum(estimate_tokens(m.content) + 4 for m in chat) + 3
