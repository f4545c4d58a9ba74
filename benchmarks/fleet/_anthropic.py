"""The Anthropic Messages wire format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from ._config import Deployment
from ._reply import ToolPlan
from ._wire import ChatRequest, Completion, WireError

__all__ = ["AnthropicWire"]

_encode = msgspec.json.encode


class _Block(msgspec.Struct):
    type: str
    text: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Block]


class _Tool(msgspec.Struct):
    name: str
    input_schema: dict[str, Any]


class _ToolChoice(msgspec.Struct):
    type: str
    name: str | None = None


class _Request(msgspec.Struct):
    model: str
    messages: list[_Message]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    system: str | list[_Block] | None = None
    stream: bool | None = False
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None


def _tool_plan(req: _Request) -> ToolPlan | None:
    """The tool to call: the one ``tool_choice`` names, else the first offered (none for ``none``)."""
    choice = req.tool_choice
    if not req.tools or (choice is not None and choice.type == "none"):
        return None
    chosen = req.tools[0]
    if choice is not None and choice.type == "tool":
        named = [t for t in req.tools if t.name == choice.name]
        if not named:
            raise WireError(400, f"tool_choice names {choice.name!r}, which is not one of the tools")
        chosen = named[0]
    return ToolPlan(chosen.name, chosen.input_schema)


_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def _text(content: str | list[_Block] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(b.text for b in content if b.text)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def _tool_id(c: Completion) -> str:
    return "toolu_" + c.id.removeprefix("msg_")


def _arguments(c: Completion) -> Any:
    """The tool call's input (its JSON cut at ``max_tokens`` is sent as the text it is: a
    non-streamed ``tool_use`` block needs an object, so a cut one is ``{"_partial": text}``)."""
    try:
        return msgspec.json.decode(c.reply.text)
    except msgspec.DecodeError:
        return {"_partial": c.reply.text}


class AnthropicWire:
    """``POST /messages`` (JSON, or SSE ``event:``/``data:`` pairs in the real event order), ``GET /models``."""

    chat_path = "/messages"
    request_id_header = "request-id"
    stream_content_type = "text/event-stream; charset=utf-8"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """``x-api-key``, or a bearer token of ``Authorization``."""
        key = headers.get("x-api-key")
        if key is not None:
            return key.strip()
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def parse(self, body: bytes) -> ChatRequest:
        """Parse a messages request (``max_tokens`` is required, as in the real API)."""
        try:
            req = msgspec.json.decode(body, type=_Request)
        except msgspec.ValidationError as e:
            raise WireError(400, f"Invalid request: {e}") from None
        except msgspec.DecodeError as e:
            raise WireError(400, f"There was an issue with the JSON body of your request: {e}") from None
        messages = [(m.role, _text(m.content)) for m in req.messages]
        if req.system:
            messages.insert(0, ("system", _text(req.system)))
        return ChatRequest(
            model=req.model,
            messages=messages,
            max_tokens=req.max_tokens,
            stream=bool(req.stream),
            include_usage=True,
            tool=_tool_plan(req),
        )

    def new_id(self, deployment: Deployment, n: int) -> str:
        """``msg_NAME_N``."""
        return f"msg_{deployment.name}_{n}"

    def error(self, status: int, message: str) -> bytes:
        """``{"type": "error", "error": {"type", "message"}}``."""
        etype = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return _encode({"type": "error", "error": {"type": etype, "message": message}})

    def _message(
        self, c: Completion, *, content: list[dict[str, Any]], stop: str | None, out_tokens: int
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": c.id,
            "type": "message",
            "role": "assistant",
            "model": c.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if c.usage:
            msg["usage"] = {"input_tokens": c.prompt_tokens, "output_tokens": out_tokens}
        return msg

    def body(self, c: Completion) -> bytes:
        """A ``message`` object with one text block (``usage`` unless the ``no_usage`` fault is on)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": c.reply.text}]
        if c.reply.tool is not None:
            arguments: Any = _arguments(c)
            content = [{"type": "tool_use", "id": _tool_id(c), "name": c.reply.tool, "input": arguments}]
        return _encode(self._message(c, content=content, stop=_STOP[c.reply.finish], out_tokens=c.completion_tokens))

    def stream_start(self, c: Completion) -> bytes:
        """``message_start``, ``content_block_start``, ``ping`` and the first ``content_block_delta``."""
        start = self._message(c, content=[], stop=None, out_tokens=1)
        out = _event("message_start", {"type": "message_start", "message": start})
        block: dict[str, Any] = {"type": "text", "text": ""}
        if c.reply.tool is not None:
            block = {"type": "tool_use", "id": _tool_id(c), "name": c.reply.tool, "input": {}}
        out += _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        out += _event("ping", {"type": "ping"})
        if c.reply.tokens:
            out += self.stream_token(c, 0)
        return out

    def stream_token(self, c: Completion, i: int) -> bytes:
        """A ``content_block_delta`` with a ``text_delta`` of token ``i``."""
        delta = {"type": "text_delta", "text": c.reply.tokens[i]}
        if c.reply.tool is not None:  # a piece of the tool call's input JSON
            delta = {"type": "input_json_delta", "partial_json": c.reply.tokens[i]}
        return _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})

    def stream_end(self, c: Completion) -> bytes:
        """``content_block_stop``, ``message_delta`` (stop reason, output tokens), ``message_stop``."""
        out = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[c.reply.finish], "stop_sequence": None},
        }
        if c.usage:
            delta["usage"] = {"output_tokens": c.completion_tokens}
        out += _event("message_delta", delta)
        return out + _event("message_stop", {"type": "message_stop"})

    def stream_cut(self, c: Completion) -> bytes:
        """``content_block_stop``, a ``message_delta`` whose ``stop_reason`` is null, ``message_stop``."""
        out = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None}}
        out += _event("message_delta", delta)
        return out + _event("message_stop", {"type": "message_stop"})

    def context_window_error(self) -> bytes:
        """Anthropic's "prompt is too long" 400 body, verbatim."""
        return _encode(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 208310 tokens > 200000 maximum",
                },
            }
        )

    def malformed(self, c: Completion, stream: bool) -> bytes:
        """A cut-off JSON object (as a ``message_start`` event's data when streaming)."""
        broken = b'{"id": "' + c.id.encode() + b'", "type": "message", "content": [{"type": "te'
        if stream:
            stop = _event("message_stop", {"type": "message_stop"})
            return b"event: message_start\ndata: " + broken + b"\n\n" + stop
        return broken

    def models(self, deployment: Deployment) -> bytes:
        """``{"data": [{"type": "model", "id", "display_name", "created_at"}], "has_more": false, ...}``."""
        return _encode(
            {
                "data": [self.model_object(deployment)],
                "has_more": False,
                "first_id": deployment.model,
                "last_id": deployment.model,
            }
        )

    def model_object(self, deployment: Deployment) -> dict[str, Any]:
        """The ``model`` object of the deployment's model."""
        return {
            "type": "model",
            "id": deployment.model,
            "display_name": deployment.model,
            "created_at": "2025-01-01T00:00:00Z",
        }
