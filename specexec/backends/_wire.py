"""msgspec structs for the provider wire formats (OpenAI chat completions, Anthropic Messages).

Response structs are strict about what a backend needs (a missing ``choices`` or ``content``
is a decode error, hence ``BadResponse``) and tolerant of everything else: unknown fields
are ignored (``forbid_unknown_fields`` is deliberately left off), optional fields default.
Request structs use ``omit_defaults`` so unset parameters are not sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._query import Message, Tool

# --------------------------------------------------------------------------- requests


class OpenAIStreamOptions(msgspec.Struct, frozen=True):
    """``stream_options``: ask for the final usage chunk."""

    include_usage: bool = True


class OpenAIChatRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """Body of ``POST /chat/completions``."""

    model: str
    messages: tuple[Message, ...] | list[dict[str, Any]]
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] | None = None
    stream: bool = False
    stream_options: OpenAIStreamOptions | None = None
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[Tool, ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class AnthropicMessage(msgspec.Struct, frozen=True):
    """One non-system message of an Anthropic request (text, or content blocks)."""

    role: str
    content: str | list[dict[str, Any]]


class AnthropicRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """Body of ``POST /messages``."""

    model: str
    messages: list[AnthropicMessage]
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    stop_sequences: tuple[str, ...] | None = None
    stream: bool = False
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


# --------------------------------------------------------------------------- OpenAI responses


MAX_COUNT = 2**63
"""Token counts at or above this (in absolute value: no provider's counter is wider than 64
bits) are not usage: the backend estimates the count instead. The engine's own, tighter bound
(``_core.MAX_TOKEN_COUNT``, 2**53) then applies to what passes."""


def token_count(value: int | float | None) -> int | None:
    """A reported token count as the backends pass it on: an integer below ``MAX_COUNT`` as is
    (a negative one too: the engine refuses it, and says so in the trace), a whole float as
    that integer (``5.0`` is 5), anything else (a fraction, an absurd magnitude) ``None``, so
    it is estimated: the answer is kept either way."""
    if isinstance(value, float):
        if not (value.is_integer() and -MAX_COUNT < value < MAX_COUNT):
            return None
        return int(value)
    if value is None or -MAX_COUNT < value < MAX_COUNT:
        return value
    return None


class OpenAIUsage(msgspec.Struct):
    """Token counts; either may be missing on some servers (then it is estimated). The wire
    values are read as numbers and checked by ``token_count`` (the properties)."""

    prompt: int | float | None = msgspec.field(default=None, name="prompt_tokens")
    completion: int | float | None = msgspec.field(default=None, name="completion_tokens")

    @property
    def prompt_tokens(self) -> int | None:
        return token_count(self.prompt)

    @property
    def completion_tokens(self) -> int | None:
        return token_count(self.completion)


class OpenAIErrorBody(msgspec.Struct):
    """The ``error`` object of an error body or an in-stream error chunk."""

    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class OpenAIFunctionCall(msgspec.Struct):
    """``function`` of a tool call: the name and the arguments as a JSON string (pieces of it
    when streamed)."""

    name: str | None = None
    arguments: str | None = None


class OpenAIToolCall(msgspec.Struct):
    """One tool call of a message (``index`` says which call a streamed piece belongs to)."""

    id: str | None = None
    type: str | None = None
    function: OpenAIFunctionCall = msgspec.field(default_factory=OpenAIFunctionCall)
    index: int = 0


class OpenAIMessage(msgspec.Struct):
    """The assistant message of a choice; ``content`` is checked for presence by the backend."""

    content: str | None = None
    role: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None


class OpenAIChoice(msgspec.Struct):
    """One choice of a (non-streamed) completion."""

    message: OpenAIMessage
    finish_reason: str | None = None
    index: int = 0


class ChatCompletion(msgspec.Struct):
    """A non-streamed chat completion: ``choices`` is required."""

    choices: list[OpenAIChoice]
    model: str | None = None
    usage: OpenAIUsage | None = None
    id: str | None = None


class OpenAIDelta(msgspec.Struct):
    """The increment carried by one streamed choice: ``content``, or generated tokens that are
    not text (reasoning beside the content, as vLLM and DeepSeek send it, tool-call
    arguments, a refusal): progress for ``HttpTimeouts.idle`` and billed all the same."""

    content: str | None = None
    role: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    refusal: str | None = None


class OpenAIChunkChoice(msgspec.Struct):
    """One choice of a streamed chunk."""

    delta: OpenAIDelta = msgspec.field(default_factory=OpenAIDelta)
    finish_reason: str | None = None
    index: int = 0


class ChatCompletionChunk(msgspec.Struct):
    """One ``data:`` payload of a streamed completion (the usage chunk has empty ``choices``)."""

    choices: list[OpenAIChunkChoice] = msgspec.field(default_factory=list)
    id: str | None = None
    model: str | None = None
    usage: OpenAIUsage | None = None
    error: OpenAIErrorBody | None = None


# --------------------------------------------------------------------------- Anthropic responses


class AnthropicUsage(msgspec.Struct):
    """Token counts of a message (``message_start`` carries input, ``message_delta`` output),
    checked by ``token_count`` as for ``OpenAIUsage``."""

    input: int | float | None = msgspec.field(default=None, name="input_tokens")
    output: int | float | None = msgspec.field(default=None, name="output_tokens")
    cache_creation: int | float | None = msgspec.field(default=None, name="cache_creation_input_tokens")
    cache_read: int | float | None = msgspec.field(default=None, name="cache_read_input_tokens")

    @property
    def input_tokens(self) -> int | None:
        return token_count(self.input)

    @property
    def output_tokens(self) -> int | None:
        return token_count(self.output)

    @property
    def cache_creation_input_tokens(self) -> int | None:
        return token_count(self.cache_creation)

    @property
    def cache_read_input_tokens(self) -> int | None:
        return token_count(self.cache_read)


class AnthropicContentBlock(msgspec.Struct):
    """A content block; only ``text`` blocks contribute to the response text."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class AnthropicMessageResponse(msgspec.Struct):
    """A non-streamed Messages API response: ``content`` is required."""

    content: list[AnthropicContentBlock]
    model: str | None = None
    stop_reason: str | None = None
    usage: AnthropicUsage | None = None
    id: str | None = None


class AnthropicErrorDetail(msgspec.Struct):
    """``error`` of an Anthropic error body or ``error`` event."""

    type: str | None = None
    message: str | None = None


class AnthropicEventType(msgspec.Struct):
    """Just the ``type`` of a streamed event (used when the SSE ``event:`` line is absent)."""

    type: str = ""


class AnthropicStartMessage(msgspec.Struct):
    """The message skeleton in ``message_start``."""

    model: str | None = None
    usage: AnthropicUsage | None = None
    id: str | None = None


class AnthropicMessageStart(msgspec.Struct):
    """``message_start``."""

    message: AnthropicStartMessage


class AnthropicBlockDelta(msgspec.Struct):
    """``delta`` of ``content_block_delta``: ``text_delta`` carries ``text``, ``input_json_delta``
    ``partial_json``, ``thinking_delta`` ``thinking``; other kinds carry no token."""

    type: str
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None


class AnthropicContentBlockDelta(msgspec.Struct):
    """``content_block_delta``."""

    delta: AnthropicBlockDelta
    index: int = 0


class AnthropicContentBlockStart(msgspec.Struct):
    """``content_block_start``: a ``tool_use`` block names its call's id and function."""

    content_block: AnthropicContentBlock
    index: int = 0


class AnthropicMessageDeltaBody(msgspec.Struct):
    """``delta`` of ``message_delta``."""

    stop_reason: str | None = None


class AnthropicMessageDelta(msgspec.Struct):
    """``message_delta``: the stop reason and the output token count."""

    delta: AnthropicMessageDeltaBody = msgspec.field(default_factory=AnthropicMessageDeltaBody)
    usage: AnthropicUsage | None = None


class AnthropicErrorEvent(msgspec.Struct):
    """``error`` (an event, or the body of an error response)."""

    error: AnthropicErrorDetail = msgspec.field(default_factory=AnthropicErrorDetail)


# --------------------------------------------------------------------------- decoders (built once)
# Non-streamed bodies are decoded untyped once (kept as ``Response.raw``, a dict) and then
# ``msgspec.convert``-ed into ``ChatCompletion`` / ``AnthropicMessageResponse`` (no second
# parse; see the ``OpenAICompatible`` docstring for why ``raw`` stays a dict).

untyped_decoder = msgspec.json.Decoder()

chat_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
anthropic_type_decoder = msgspec.json.Decoder(AnthropicEventType)
anthropic_start_decoder = msgspec.json.Decoder(AnthropicMessageStart)
anthropic_block_delta_decoder = msgspec.json.Decoder(AnthropicContentBlockDelta)
anthropic_block_start_decoder = msgspec.json.Decoder(AnthropicContentBlockStart)
anthropic_message_delta_decoder = msgspec.json.Decoder(AnthropicMessageDelta)
anthropic_error_decoder = msgspec.json.Decoder(AnthropicErrorEvent)
encoder = msgspec.json.Encoder()
