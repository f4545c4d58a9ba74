"""What a run sends (``Query``) and what a backend returns (``Response``)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._errors import PolicyError

DEFAULT_MAX_TOKENS = 256
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})

Role = Literal["system", "user", "assistant", "tool"]


class TextPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="text"):
    """A text part of a message's content (OpenAI's ``{"type": "text", "text": ...}``)."""

    text: str


class ImageURL(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An image by ``url``: ``https://…`` or a ``data:image/png;base64,…`` URL; ``detail`` as OpenAI's."""

    url: str
    detail: str | None = None


class ImagePart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="image_url"):
    """An image part of a message's content (OpenAI's ``{"type": "image_url", "image_url": {...}}``)."""

    image_url: ImageURL

    @classmethod
    def of(cls, url: str, detail: str | None = None) -> ImagePart:
        """An image part for ``url`` (an http(s) URL or a base64 ``data:`` URL)."""
        return cls(ImageURL(url, detail))


ContentPart = TextPart | ImagePart
"""One part of a message's content: text or an image."""


class ToolCall(msgspec.Struct, frozen=True):
    """A function call the model asked for: its ``id``, the function ``name`` and the
    ``arguments`` as parsed JSON (a malformed arguments string is a ``BadResponse``)."""

    id: str
    name: str
    arguments: Any = None


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One chat message: ``content`` is text or a tuple of parts (text, images).

    An assistant message may carry the ``tool_calls`` it made; a ``tool`` message answers the
    call ``tool_call_id`` with its ``content``.
    """

    role: Role
    content: str | tuple[ContentPart, ...]
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The text of the content (the text parts joined; images left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class Function(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A function a model may call: ``name``, ``description`` and its JSON-schema ``parameters``."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tool in OpenAI's function-tool shape ``{"type": "function", "function": {...}}``."""

    function: Function
    type: Literal["function"] = "function"

    @classmethod
    def of(cls, name: str, parameters: dict[str, Any] | None = None, description: str | None = None) -> Tool:
        """A function tool named ``name`` taking the JSON-schema ``parameters``."""
        if parameters is None:
            return cls(Function(name, description))
        return cls(Function(name, description, parameters))


class Query(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request: messages (or a prompt), generation parameters and request metadata.

    ``Query("text")`` is a single user message. ``tenant`` and ``priority`` are metadata for
    budgets and traces; ``metadata`` is free-form and travels into the trace.

    Sent to the provider: ``top_p``, ``seed``, ``tools`` (OpenAI's function-tool shape; mapped
    to Anthropic's) and ``tool_choice`` (``"auto"``, ``"none"``, ``"required"`` or
    ``{"type": "function", "function": {"name": ...}}``), ``response_format``
    (``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"name": ...,
    "schema": {...}}}``) and ``extra``, merged into the request body as it is (for options
    specexec does not model). A field a provider cannot take is a ``PolicyError``, never
    dropped.
    """

    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    tenant: str | None = None
    priority: int = 0
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # bad input is a PolicyError (a ValueError too) with the field's path, as everywhere in specexec
        if self.prompt is None and not self.messages:
            raise PolicyError("Query needs a prompt or at least one message", path="$.prompt")
        if self.prompt is not None and self.messages:
            raise PolicyError("Query takes a prompt or messages, not both", path="$.messages")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise PolicyError(f"Query.max_tokens must be a positive int, got {self.max_tokens!r}", path="$.max_tokens")
        if self.response_format is not None and self.response_format.get("type") not in _RESPONSE_FORMATS:
            raise PolicyError(
                f"Query.response_format type must be one of {sorted(_RESPONSE_FORMATS)}, got "
                f"{self.response_format.get('type')!r}",
                path="$.response_format.type",
            )
        choice = self.tool_choice
        if isinstance(choice, str) and choice not in ("auto", "none", "required"):
            raise PolicyError(
                f"Query.tool_choice must be 'auto', 'none', 'required' or a dict, got {choice!r}", path="$.tool_choice"
            )

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
        return "\n".join(m.text for m in self.messages)


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
    provider payload, for callers that need more than the text; ``tool_calls`` the function
    calls the model asked for; ``request_id`` the provider's id of the request (its response
    header, else the id in the body).
    """

    text: str
    usage: Usage = Usage()
    model: str | None = None
    ttft: float | None = None
    finish_reason: str | None = None
    raw: Any = None
    tool_calls: tuple[ToolCall, ...] = ()
    request_id: str | None = None


class StreamChunk(msgspec.Struct, frozen=True):
    """One piece of a streamed answer (what ``Backend.stream`` yields).

    ``text`` is the new text (may be empty); the last chunks of a stream may carry the
    provider's ``usage``, the ``model`` id it reports, the ``finish_reason``, the
    ``tool_calls`` the model made and the provider's ``request_id``.
    """

    text: str = ""
    usage: Usage | None = None
    model: str | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    request_id: str | None = None


def estimate_tokens(text: str) -> int:
    """An upper bound on the tokens of ``text`` for cost reservation.

    Byte-pair tokenizers never make more tokens than UTF-8 bytes, so the byte count is a
    safe (pessimistic, ≈ 4× on English) bound: a ceiling computed from it is never crossed.
    Backends that can count exactly implement ``count_input_tokens``.
    """
    return len(text) if text.isascii() else len(text.encode("utf-8"))  # ASCII: one byte a character, no copy


def estimate_input_tokens(query: Query) -> int:
    """Upper bound on the prompt tokens of ``query``: its text plus a small per-message framing."""
    prompt = query.prompt
    if prompt is not None and not query.tools:  # one user message: its text + 4 framing + 3
        return estimate_tokens(prompt) + 7
    chat = query.chat
    tools = estimate_tokens(msgspec.json.encode(query.tools).decode()) if query.tools else 0
    return sum(_message_tokens(m) + 4 for m in chat) + 3 + tools


IMAGE_TOKEN_BOUND = 2000
"""Input tokens an image part is reserved at (OpenAI bills a high-detail image ≈ 765–1105
tokens, Anthropic at most ≈ 1600 for the largest image it does not downscale)."""


def _message_tokens(message: Message) -> int:
    if isinstance(message.content, str):
        return estimate_tokens(message.content)
    return sum(estimate_tokens(p.text) if isinstance(p, TextPart) else IMAGE_TOKEN_BOUND for p in message.content)
