"""``OpenAICompatible``: the chat completions API (OpenAI, vLLM, Ollama, llama.cpp, TGI, …)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
from ._request import encode_with_extra, openai_messages, parse_arguments
from ._sse import ServerSentEvent
from ._wire import (
    ChatCompletion,
    OpenAIChatRequest,
    OpenAIStreamOptions,
    OpenAIToolCall,
    OpenAIUsage,
    chat_chunk_decoder,
    encoder,
    untyped_decoder,
)

_STREAM_OPTIONS = OpenAIStreamOptions(include_usage=True)

ABORTED_FINISH_REASONS = frozenset({"abort", "error"})
"""Finish reasons that say the server gave up on the answer (vLLM ends an engine-aborted
request with ``"abort"``, then ``[DONE]``): a ``BadResponse``, not a complete answer."""


class OpenAICompatible(HttpBackend):
    """A model behind an OpenAI-compatible ``POST {base_url}/chat/completions``.

    ``api_key_env`` names the environment variable holding the key, read at each call and
    sent as ``Authorization: Bearer``; ``None`` sends no key (local servers). ``headers``
    are added to every request; ``headers_env`` maps header names to environment variables
    whose values are sent (read at each call, like the key: Azure's ``api-key``, a gateway's
    token), and their values are redacted as the key is. ``complete`` streams underneath by default (``stream=None``,
    or ``True``: SSE with ``stream_options.include_usage``; ``Response.ttft`` records the time
    to the first content delta), so a cancelled attempt frees a server that notices a
    disconnect only while streaming (llama.cpp); ``stream=False`` asks for one JSON body.
    ``stream(query)`` always streams, yielding ``StreamChunk``s. A server that answers a
    stream request with a JSON body is read as one piece. ``timeout`` applies to every
    request; ``http`` configures the pools of the clients this backend creates; ``client``
    is used as given and never closed.

    ``Response.raw`` of a non-streamed (JSON) answer is the provider's body as a plain
    ``dict`` (``None`` when streamed). The body is parsed once, untyped, and the typed
    ``ChatCompletion`` the backend reads is ``msgspec.convert``-ed from that dict (a walk
    over Python objects, not a second parse). A typed-only decode would save ≈ 1 µs per
    call, but ``raw`` would then have to become a typed struct (dropping the fields the
    struct does not name, such as ``system_fingerprint``) or a lazy mapping (which
    ``json.dumps``, ``isinstance(raw, dict)`` and ``msgspec`` encoding of a ``Response``
    would no longer accept); ``raw`` stays the ``dict`` callers already index and serialize.
    """

    path = "/chat/completions"
    key_header = "authorization"

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool | None = None,
        provider: str = "openai",
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

    def _headers(self, key: str | None) -> dict[str, str]:
        """``Authorization: Bearer`` plus the fixed headers (the base class caches it per key value)."""
        headers = dict(self._extra_headers)
        headers["content-type"] = "application/json"
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _encode(self, query: Query, stream: bool) -> bytes:
        request = OpenAIChatRequest(
            model=self.model,
            messages=openai_messages(query.chat),
            max_tokens=query.max_tokens,
            temperature=query.temperature,
            stop=query.stop or None,
            stream=stream,
            stream_options=_STREAM_OPTIONS if stream else None,
            top_p=query.top_p,
            seed=query.seed,
            tools=query.tools or None,
            tool_choice=query.tool_choice,
            response_format=query.response_format,
        )
        return encode_with_extra(request, query.extra, encoder)

    def _parse(self, body: bytes, query: Query, call: CallInfo) -> Response:
        try:
            raw = untyped_decoder.decode(body)
            completion = msgspec.convert(raw, ChatCompletion)
        except msgspec.DecodeError as exc:
            raise call.bad(f"malformed chat completion: {exc}", body) from None
        if not completion.choices:
            raise call.bad("chat completion has no choices", body)
        choice = completion.choices[0]
        text = choice.message.content
        calls = _tool_calls(choice.message.tool_calls or (), call)
        if text is None:
            if not calls:
                raise call.bad("chat completion choice has no message content", body)
            text = ""  # a tool call alone
        if choice.finish_reason in ABORTED_FINISH_REASONS:
            raise call.bad(f"the server ended the answer with finish_reason {choice.finish_reason!r}", body)
        return Response(
            text=text,
            usage=_usage(query, text, completion.usage),
            model=call.clean(completion.model),
            finish_reason=choice.finish_reason,
            raw=raw,
            tool_calls=calls,
            request_id=call.request_id or call.clean(completion.id),
        )

    def _stream_state(self, query: Query, start: float, call: CallInfo) -> StreamState:
        return _ChatStream(query, start, call)


def _tool_calls(calls: Sequence[OpenAIToolCall], call: CallInfo) -> tuple[ToolCall, ...]:
    out = []
    for c in calls:
        name = c.function.name or ""
        out.append(ToolCall(c.id or "", name, parse_arguments(c.function.arguments, name, call)))
    return tuple(out)


def _usage(query: Query, text: str, usage: OpenAIUsage | None) -> Usage:
    if usage is None:
        return make_usage(query, text, None, None)
    return make_usage(query, text, usage.prompt_tokens, usage.completion_tokens)


def _has_tokens(calls: list[OpenAIToolCall] | None) -> bool:
    """Whether streamed tool-call pieces carry generated tokens (a function name or arguments)."""
    return calls is not None and any(c.function.name or c.function.arguments for c in calls)


class _ChatStream:
    """Reassembles a streamed chat completion: content deltas of choice 0, model, usage, ``[DONE]``."""

    def __init__(self, query: Query, start: float, call: CallInfo) -> None:
        self.query = query
        self.start = start
        self.call = call
        self.done = False
        self.parts: list[str] = []
        self.deltas = 0
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: OpenAIUsage | None = None
        self.ttft: float | None = None
        self.saw_choice = False
        self.id: str | None = None
        self.calls: dict[int, OpenAIToolCall] = {}  # by index: id and name once, arguments in pieces
        self.arguments: dict[int, list[str]] = {}

    def feed(self, event: ServerSentEvent) -> None:
        if self.done:
            return
        data = event.data.strip()
        if data == b"[DONE]":
            self.done = True
            return
        if not data:
            return
        try:
            chunk = chat_chunk_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise self.call.bad(f"malformed stream chunk: {exc}", data) from None
        if chunk.error is not None:
            raise error_for_stream_error(
                chunk.error.type or str(chunk.error.code or ""), chunk.error.message, self.call, data
            )
        if event.event == "error":
            raise error_for_stream_error("error", None, self.call, data)
        if chunk.model and self.model is None:
            self.model = self.call.clean(chunk.model)
        if chunk.id and self.id is None:
            self.id = self.call.clean(chunk.id)
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            self.saw_choice = True
            delta = choice.delta
            content = delta.content
            if content:
                if self.ttft is None:
                    self.ttft = anyio.current_time() - self.start
                self.parts.append(content)
                self.deltas += 1
            elif delta.reasoning_content or delta.reasoning or delta.refusal or _has_tokens(delta.tool_calls):
                self.deltas += 1  # a role-only delta, or `tool_calls: []`, carries no token: not progress
            for piece in delta.tool_calls or ():
                known = self.calls.setdefault(piece.index, piece)
                if piece.id and not known.id:
                    known.id = piece.id
                if piece.function.name and not known.function.name:
                    known.function.name = piece.function.name
                if piece.function.arguments:
                    self.arguments.setdefault(piece.index, []).append(piece.function.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def partial_usage(self) -> Usage:
        """The tokens billed so far: the reported prompt tokens (else the bound) and the deltas' text."""
        prompt = self.usage.prompt_tokens if self.usage is not None else None
        return partial_stream_usage(self.query, self.parts, self.deltas, prompt)

    def finish(self) -> Response:
        if not self.done:
            raise self.call.bad("stream ended before [DONE] (truncated)")
        if not self.saw_choice:
            raise self.call.bad("stream carried no choices")
        if self.finish_reason is None:
            # llama.cpp's server ends a running stream with [DONE] and no finish_reason when it
            # is interrupted (e.g. by another request on its slot): the answer is cut short
            raise self.call.bad("stream ended without a finish_reason (cut short by the server)")
        if self.finish_reason in ABORTED_FINISH_REASONS:
            raise self.call.bad(f"the server ended the stream with finish_reason {self.finish_reason!r}")
        text = "".join(self.parts)
        usage = self.usage
        calls = tuple(
            ToolCall(
                c.id or "",
                c.function.name or "",
                parse_arguments("".join(self.arguments.get(i, ())), c.function.name or "", self.call),
            )
            for i, c in sorted(self.calls.items())
        )
        return Response(
            text=text,
            usage=_usage(self.query, text, usage),
            model=self.model,
            ttft=self.ttft,
            finish_reason=self.finish_reason,
            raw=None,
            tool_calls=calls,
            request_id=self.call.request_id or self.id,
        )
