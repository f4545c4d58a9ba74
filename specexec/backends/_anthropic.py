"""``Anthropic``: the Messages API (``POST {base_url}/messages``)."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import msgspec

from .._backend import Limits
from .._health import BreakerConfig
from .._httpx import httpx
from .._query import Query, Response, ToolCall, Usage
from ._http import (
    DEFAULT_HTTP_CONFIG,
    DEFAULT_TIMEOUTS,
    CallInfo,
    HttpBackend,
    HttpConfig,
    HttpTimeouts,
    StreamState,
    error_for_stream_error,
    make_usage,
    partial_stream_usage,
)
from ._request import (
    ANTHROPIC_JSON_TOOL,
    anthropic_content,
    anthropic_refusals,
    anthropic_tools,
    encode_with_extra,
    parse_arguments,
    tool_calls_of,
)
from ._sse import ServerSentEvent
from ._wire import (
    AnthropicMessage,
    AnthropicMessageResponse,
    AnthropicRequest,
    AnthropicUsage,
    anthropic_block_delta_decoder,
    anthropic_block_start_decoder,
    anthropic_error_decoder,
    anthropic_message_delta_decoder,
    anthropic_start_decoder,
    anthropic_type_decoder,
    encoder,
    untyped_decoder,
)

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` header sent unless another is given."""


class Anthropic(HttpBackend):
    """A Claude model behind the Anthropic Messages API.

    The key is read at each call from ``api_key_env`` (``ANTHROPIC_API_KEY`` by default) and
    sent as ``x-api-key`` with ``anthropic-version``. ``system`` messages of the query are
    joined into the top-level ``system`` field. ``complete`` streams underneath by default
    (``stream=None`` or ``True``; ``Response.ttft`` records the time to the first text delta);
    ``stream=False`` asks for one JSON body. ``stream(query)`` yields ``StreamChunk``s. ``timeout``, ``http``,
    ``headers_env`` and ``client`` are as for ``OpenAICompatible``, and so is ``Response.raw`` (the JSON
    body as a plain ``dict``, parsed once).
    """

    path = "/messages"
    key_header = "x-api-key"

    def __init__(
        self,
        name: str,
        *,
        base_url: str = "https://api.anthropic.com/v1",
        model: str,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        anthropic_version: str = DEFAULT_ANTHROPIC_VERSION,
        headers: Mapping[str, str] | None = None,
        stream: bool | None = None,
        provider: str = "anthropic",
        region: str = "default",
        input_price: float = 0.0,
        output_price: float = 0.0,
        limits: Limits | None = None,
        context_window: int | None = None,
        breaker: BreakerConfig | None = None,
        timeout: HttpTimeouts = DEFAULT_TIMEOUTS,
        http: HttpConfig = DEFAULT_HTTP_CONFIG,
        client: httpx.AsyncClient | None = None,
        headers_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            name,
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            headers=headers,
            stream=stream,
            provider=provider,
            region=region,
            input_price=input_price,
            output_price=output_price,
            limits=limits,
            context_window=context_window,
            breaker=breaker,
            timeout=timeout,
            http=http,
            client=client,
            headers_env=headers_env,
        )
        self.anthropic_version = anthropic_version

    def _headers(self, key: str | None) -> dict[str, str]:
        """``x-api-key`` and ``anthropic-version`` plus the fixed headers (cached per key value)."""
        headers = dict(self._extra_headers)
        headers["content-type"] = "application/json"
        headers["anthropic-version"] = self.anthropic_version
        if key is not None:
            headers["x-api-key"] = key
        return headers

    def _encode(self, query: Query, stream: bool) -> bytes:
        chat = query.chat
        anthropic_refusals(query, self.name)
        system = [m.text for m in chat if m.role == "system"]
        tools, tool_choice = anthropic_tools(query, self.name)
        request = AnthropicRequest(
            model=self.model,
            messages=[
                AnthropicMessage("user" if m.role == "tool" else m.role, anthropic_content(m, self.name))
                for m in chat
                if m.role != "system"
            ],
            max_tokens=query.max_tokens,
            system="\n\n".join(system) if system else None,
            temperature=query.temperature,
            stop_sequences=query.stop or None,
            stream=stream,
            top_p=query.top_p,
            tools=tools,
            tool_choice=tool_choice,
        )
        return encode_with_extra(request, query.extra, encoder)

    def _parse(self, body: bytes, query: Query, call: CallInfo) -> Response:
        try:
            raw = untyped_decoder.decode(body)
            message = msgspec.convert(raw, AnthropicMessageResponse)
        except msgspec.DecodeError as exc:
            raise call.bad(f"malformed Messages API response: {exc}", body) from None
        text = "".join(block.text or "" for block in message.content if block.type == "text")
        text, calls = _json_answer(query, text, tool_calls_of(message.content))
        return Response(
            text=text,
            usage=_usage(query, text, message.usage, message.usage),
            model=call.clean(message.model),
            finish_reason=message.stop_reason,
            raw=raw,
            tool_calls=calls,
            request_id=call.request_id or call.clean(message.id),
        )

    def _stream_state(self, query: Query, start: float, call: CallInfo) -> StreamState:
        return _MessageStream(query, start, call)


def _json_answer(query: Query, text: str, calls: tuple[ToolCall, ...]) -> tuple[str, tuple[ToolCall, ...]]:
    """With ``response_format`` (sent as the forced tool ``ANTHROPIC_JSON_TOOL``), the tool's
    input is the answer: returned as JSON text, not as a tool call."""
    fmt = query.response_format
    if fmt is None or fmt.get("type") == "text":
        return text, calls
    for c in calls:
        if c.name == ANTHROPIC_JSON_TOOL:
            return msgspec.json.encode(c.arguments).decode(), tuple(x for x in calls if x is not c)
    return text, calls


def _input_tokens(usage: AnthropicUsage | None) -> int | None:
    if usage is None or usage.input_tokens is None:
        return None
    return usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)


def _usage(query: Query, text: str, start: AnthropicUsage | None, end: AnthropicUsage | None) -> Usage:
    input_tokens = _input_tokens(end) if end is not None and end.input_tokens is not None else _input_tokens(start)
    output_tokens = end.output_tokens if end is not None else None
    return make_usage(query, text, input_tokens, output_tokens)


class _MessageStream:
    """Reassembles a streamed message: ``message_start`` (model, input usage), text deltas,
    ``message_delta`` (stop reason, output usage), ``message_stop``; ``error`` raises."""

    def __init__(self, query: Query, start: float, call: CallInfo) -> None:
        self.query = query
        self.start = start
        self.call = call
        self.done = False
        self.parts: list[str] = []
        self.deltas = 0
        self.model: str | None = None
        self.stop_reason: str | None = None
        self.start_usage: AnthropicUsage | None = None
        self.end_usage: AnthropicUsage | None = None
        self.ttft: float | None = None
        self.id: str | None = None
        self.tools: dict[int, tuple[str, str]] = {}  # tool_use blocks by index: (id, name)
        fmt = query.response_format
        self._json_tool_only = fmt is not None and fmt.get("type") != "text"
        self.arguments: dict[int, list[str]] = {}

    def feed(self, event: ServerSentEvent) -> None:
        if self.done:
            return
        data = event.data
        try:
            kind = event.event
            if kind == "message":  # no `event:` line: the payload's `type` says
                kind = anthropic_type_decoder.decode(data).type
            if kind == "content_block_delta":
                block = anthropic_block_delta_decoder.decode(data)
                delta = block.delta
                if delta.text or delta.partial_json or delta.thinking:
                    self.deltas += 1  # text, thinking or tool-call arguments: generated tokens all
                # an empty delta (or a signature, a citation) carries no token: not progress
                if delta.type == "input_json_delta" and delta.partial_json:
                    if self._json_tool_only and self.tools.get(block.index, ("", ""))[1] == ANTHROPIC_JSON_TOOL:
                        self._text(delta.partial_json)  # the forced JSON tool's input is the answer's text
                    else:
                        self.arguments.setdefault(block.index, []).append(delta.partial_json)
                if delta.type == "text_delta" and delta.text:
                    self._text(delta.text)
            elif kind == "content_block_start":
                start = anthropic_block_start_decoder.decode(data)
                if start.content_block.type == "tool_use":
                    self.tools[start.index] = (start.content_block.id or "", start.content_block.name or "")
            elif kind == "message_start":
                message = anthropic_start_decoder.decode(data).message
                self.model = self.call.clean(message.model)
                self.id = self.call.clean(message.id)
                self.start_usage = message.usage
            elif kind == "message_delta":
                body = anthropic_message_delta_decoder.decode(data)
                if body.delta.stop_reason is not None:
                    self.stop_reason = body.delta.stop_reason
                if body.usage is not None:
                    self.end_usage = body.usage
            elif kind == "message_stop":
                self.done = True
            elif kind == "error":
                error = anthropic_error_decoder.decode(data).error
                raise error_for_stream_error(error.type, error.message, self.call, data)
            # ping, content_block_start/stop and unknown events carry nothing we need
        except msgspec.DecodeError as exc:
            raise self.call.bad(f"malformed stream event {event.event!r}: {exc}", data) from None

    def _text(self, text: str) -> None:
        if self.ttft is None:
            self.ttft = anyio.current_time() - self.start
        self.parts.append(text)

    def partial_usage(self) -> Usage:
        """The tokens billed so far: the input and output counts the provider reported, else estimates."""
        usage = partial_stream_usage(
            self.query, self.parts, self.deltas, _input_tokens(self.end_usage) or _input_tokens(self.start_usage)
        )
        reported = self.end_usage.output_tokens if self.end_usage is not None else None
        if reported is not None and reported > usage.output_tokens:
            return Usage(input_tokens=usage.input_tokens, output_tokens=reported, estimated=True)
        return usage

    def finish(self) -> Response:
        if not self.done:
            raise self.call.bad("stream ended before message_stop (truncated)")
        if self.stop_reason is None:
            raise self.call.bad("stream ended without a finish_reason (no stop_reason in message_delta)")
        text = "".join(self.parts)
        if self._json_tool_only:  # the text is the JSON tool's input as streamed: it must parse
            parse_arguments(text, ANTHROPIC_JSON_TOOL, self.call)
        calls = tuple(
            ToolCall(id_, name, parse_arguments("".join(self.arguments.get(i, ())), name, self.call))
            for i, (id_, name) in sorted(self.tools.items())
            if not (self._json_tool_only and name == ANTHROPIC_JSON_TOOL)
        )
        return Response(
            text=text,
            usage=_usage(self.query, text, self.start_usage, self.end_usage),
            model=self.model,
            ttft=self.ttft,
            finish_reason=self.stop_reason,
            raw=None,
            tool_calls=calls,
            request_id=self.call.request_id or self.id,
        )
