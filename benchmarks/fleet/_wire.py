"""What the two wire formats (OpenAI chat completions, Anthropic messages) have in common."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._config import Deployment
from ._reply import Reply, ToolPlan

__all__ = ["ChatRequest", "Completion", "Wire", "WireError"]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat request, parsed from either format: ``messages`` are ``(role, text)`` pairs."""

    model: str
    messages: list[tuple[str, str]]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tool: ToolPlan | None = None
    """The tool to call (tools offered and not ``tool_choice: none``)."""
    json_mode: bool = False
    """JSON output asked for (OpenAI ``response_format``)."""
    json_schema: dict[str, Any] | None = None
    """The schema of that JSON, if one was given."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A reply ready to serialise: ids, the reported model, the tokens and whether to report usage."""

    id: str
    created: int
    model: str
    reply: Reply
    prompt_tokens: int
    usage: bool
    include_usage: bool

    @property
    def completion_tokens(self) -> int:
        """Tokens in the reply."""
        return len(self.reply.tokens)


class WireError(Exception):
    """A request the format rejects (bad JSON, missing fields): answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class Wire(Protocol):
    """One provider's API format: paths, auth header, request parsing, bodies, stream events and errors."""

    #: The path, under ``/NAME/v1``, of a chat request.
    chat_path: str
    #: The response header carrying the request id.
    request_id_header: str
    #: The content type of a streamed response.
    stream_content_type: str

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """The API key a request presents, or ``None``."""
        ...

    def parse(self, body: bytes) -> ChatRequest:
        """Parse a chat request body; raises :class:`WireError` (400) if it is not valid."""
        ...

    def new_id(self, deployment: Deployment, n: int) -> str:
        """The id of the ``n``-th completion of ``deployment``."""
        ...

    def error(self, status: int, message: str) -> bytes:
        """An error body in this format for ``status``."""
        ...

    def body(self, c: Completion) -> bytes:
        """The body of a non-streaming response."""
        ...

    def stream_start(self, c: Completion) -> bytes:
        """The stream's opening events and its first token (sent at time to first token)."""
        ...

    def stream_token(self, c: Completion, i: int) -> bytes:
        """The event carrying token ``i`` (``i >= 1``)."""
        ...

    def stream_end(self, c: Completion) -> bytes:
        """The closing events: finish reason, usage, end of stream."""
        ...

    def malformed(self, c: Completion, stream: bool) -> bytes:
        """A 200 body (or stream) that is not valid JSON."""
        ...

    def stream_cut(self, c: Completion) -> bytes:
        """The end of a stream cut short: the end marker without a finish reason (or usage)."""
        ...

    def context_window_error(self) -> bytes:
        """The provider's exact 400 body for a prompt over the model's context window."""
        ...

    def models(self, deployment: Deployment) -> bytes:
        """The body of ``GET /models``: a list holding the deployment's model."""
        ...

    def model_object(self, deployment: Deployment) -> dict[str, Any]:
        """The body of ``GET /models/ID`` for the deployment's model."""
        ...
