"""The OpenAI chat completions wire format (also what vLLM, Ollama, TGI and most hosted APIs speak)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from ._config import Deployment
from ._reply import ToolPlan
from ._wire import ChatRequest, Completion, WireError

__all__ = ["OpenAIWire"]

_encode = msgspec.json.encode


class _Part(msgspec.Struct):
    type: str
    text: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Part] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = False


class _Function(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class _Tool(msgspec.Struct):
    function: _Function
    type: str = "function"


class _JsonSchema(msgspec.Struct):
    name: str | None = None
    schema: dict[str, Any] | None = None


class _ResponseFormat(msgspec.Struct):
    type: str
    json_schema: _JsonSchema | None = None


class _Request(msgspec.Struct):
    model: str
    messages: list[_Message]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: _ResponseFormat | None = None


def _tool_plan(req: _Request) -> ToolPlan | None:
    """The tool to call: the one ``tool_choice`` names, else the first offered (none for ``"none"``)."""
    if not req.tools or req.tool_choice == "none":
        return None
    chosen = req.tools[0].function
    if isinstance(req.tool_choice, dict):
        name = (req.tool_choice.get("function") or {}).get("name")
        named = [t.function for t in req.tools if t.function.name == name]
        if not named:
            raise WireError(400, f"tool_choice names {name!r}, which is not one of the tools")
        chosen = named[0]
    return ToolPlan(chosen.name, chosen.parameters or {"type": "object", "properties": {}})


_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    529: ("server_error", "overloaded"),
}


def _text(content: str | list[_Part] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(p.text for p in content if p.text)


def _finish(c: Completion) -> str:
    return "tool_calls" if c.reply.finish == "tool" else c.reply.finish


def _call_id(c: Completion) -> str:
    return "call_" + c.id.removeprefix("chatcmpl-")


class OpenAIWire:
    """``POST /chat/completions`` (JSON or SSE ``data:`` chunks ending ``data: [DONE]``), ``GET /models``."""

    chat_path = "/chat/completions"
    request_id_header = "x-request-id"
    stream_content_type = "text/event-stream; charset=utf-8"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """The bearer token of ``Authorization``."""
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def parse(self, body: bytes) -> ChatRequest:
        """Parse a chat completions request (unknown fields are ignored, like the real API)."""
        try:
            req = msgspec.json.decode(body, type=_Request)
        except msgspec.ValidationError as e:
            raise WireError(400, f"Invalid request: {e}") from None
        except msgspec.DecodeError as e:
            raise WireError(400, f"We could not parse the JSON body of your request: {e}") from None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        fmt = req.response_format
        json_mode = fmt is not None and fmt.type in ("json_object", "json_schema")
        return ChatRequest(
            model=req.model,
            messages=[(m.role, _text(m.content)) for m in req.messages],
            max_tokens=max_tokens,
            stream=bool(req.stream),
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            tool=_tool_plan(req),
            json_mode=json_mode,
            json_schema=fmt.json_schema.schema if fmt is not None and fmt.json_schema is not None else None,
        )

    def new_id(self, deployment: Deployment, n: int) -> str:
        """``chatcmpl-NAME-N``."""
        return f"chatcmpl-{deployment.name}-{n}"

    def error(self, status: int, message: str) -> bytes:
        """``{"error": {"message", "type", "param", "code"}}``."""
        etype, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return _encode({"error": {"message": message, "type": etype, "param": None, "code": code}})

    def _usage(self, c: Completion) -> dict[str, int]:
        return {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        }

    def body(self, c: Completion) -> bytes:
        """A ``chat.completion`` object (``usage`` unless the ``no_usage`` fault is on)."""
        out: dict[str, Any] = {
            "id": c.id,
            "object": "chat.completion",
            "created": c.created,
            "model": c.model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(c),
                    "logprobs": None,
                    "finish_reason": _finish(c),
                }
            ],
        }
        if c.usage:
            out["usage"] = self._usage(c)
        return _encode(out)

    def _message(self, c: Completion) -> dict[str, Any]:
        if c.reply.tool is None:
            return {"role": "assistant", "content": c.reply.text, "refusal": None}
        call = {"id": _call_id(c), "type": "function", "function": {"name": c.reply.tool, "arguments": c.reply.text}}
        return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}

    def _chunk(self, c: Completion, delta: dict[str, Any], finish: str | None) -> bytes:
        chunk: dict[str, Any] = {
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if c.include_usage and c.usage:
            chunk["usage"] = None
        return b"data: " + _encode(chunk) + b"\n\n"

    def stream_start(self, c: Completion) -> bytes:
        """The role chunk, then the first token's chunk."""
        out = self._chunk(c, {"role": "assistant", "content": "", "refusal": None}, None)
        if c.reply.tokens:
            out += self.stream_token(c, 0)
        return out

    def stream_token(self, c: Completion, i: int) -> bytes:
        """A chunk with ``delta.content`` = token ``i`` (a tool call: a piece of its arguments;
        the first piece names the call's id and function)."""
        if c.reply.tool is None:
            return self._chunk(c, {"content": c.reply.tokens[i]}, None)
        call: dict[str, Any] = {"index": 0, "function": {"arguments": c.reply.tokens[i]}}
        if i == 0:
            call.update(id=_call_id(c), type="function")
            call["function"]["name"] = c.reply.tool
        return self._chunk(c, {"tool_calls": [call]}, None)

    def stream_end(self, c: Completion) -> bytes:
        """The ``finish_reason`` chunk, the usage chunk (``stream_options.include_usage``), ``[DONE]``."""
        out = self._chunk(c, {}, _finish(c))
        if c.include_usage and c.usage:
            usage = {
                "id": c.id,
                "object": "chat.completion.chunk",
                "created": c.created,
                "model": c.model,
                "choices": [],
                "usage": self._usage(c),
            }
            out += b"data: " + _encode(usage) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def stream_cut(self, c: Completion) -> bytes:
        """``data: [DONE]`` alone: no ``finish_reason`` chunk, no usage (llama.cpp, interrupted)."""
        return b"data: [DONE]\n\n"

    def context_window_error(self) -> bytes:
        """OpenAI's ``context_length_exceeded`` 400 body, verbatim."""
        return _encode(
            {
                "error": {
                    "message": "This model's maximum context length is 128000 tokens. However, your messages "
                    "resulted in 130000 tokens. Please reduce the length of the messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
        )

    def malformed(self, c: Completion, stream: bool) -> bytes:
        """A cut-off JSON object (as a ``data:`` line when streaming)."""
        broken = b'{"id": "' + c.id.encode() + b'", "object": "chat.completion", "choices": [{"index": 0, "mess'
        if stream:
            return b"data: " + broken + b"\n\ndata: [DONE]\n\n"
        return broken

    def models(self, deployment: Deployment) -> bytes:
        """``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``."""
        return _encode({"object": "list", "data": [self.model_object(deployment)]})

    def model_object(self, deployment: Deployment) -> dict[str, Any]:
        """The ``model`` object of the deployment's model."""
        return {"id": deployment.model, "object": "model", "created": 1700000000, "owned_by": deployment.provider}
