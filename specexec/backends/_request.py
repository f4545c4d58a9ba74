"""Mapping the request surface of a ``Query`` (tools, tool choice, response format, content
parts, ``extra``) onto the provider wire formats, and tool-call arguments back.

OpenAI's shapes are the ``Query``'s own; Anthropic's are mapped (see ``anthropic_*``).
A field a provider cannot take is a ``PolicyError`` naming it, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import PolicyError
from .._query import ImagePart, Message, Query, TextPart, ToolCall

if TYPE_CHECKING:
    from ._http import CallInfo

ANTHROPIC_JSON_TOOL = "json_response"
"""The tool an Anthropic request is forced to call for ``response_format`` (its input is the
JSON answer, returned as ``Response.text``)."""

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.S)
_arguments = msgspec.json.Decoder()


def encode_with_extra(request: msgspec.Struct, extra: dict[str, Any], encoder: msgspec.json.Encoder) -> bytes:
    """``request`` as JSON with ``extra`` merged into its top level (``extra`` wins)."""
    if not extra:
        return encoder.encode(request)
    body = msgspec.to_builtins(request)
    body.update(extra)
    return encoder.encode(body)


def parse_arguments(text: str | None, name: str, call: CallInfo) -> Any:
    """A tool call's arguments string as JSON (empty: ``{}``); malformed is a ``BadResponse``."""
    if not text or not text.strip():
        return {}
    try:
        return _arguments.decode(text)
    except msgspec.DecodeError as exc:
        raise call.bad(f"tool call {name!r} has malformed JSON arguments: {exc}", text) from None


# --------------------------------------------------------------------------- OpenAI


def openai_messages(chat: Sequence[Message]) -> tuple[Message, ...] | list[dict[str, Any]]:
    """The messages as OpenAI takes them: as they are, unless an assistant message carries
    tool calls (OpenAI's shape nests the name and a JSON-string of the arguments)."""
    if not any(m.tool_calls for m in chat):
        return tuple(chat)
    out: list[dict[str, Any]] = []
    for m in chat:
        item = msgspec.to_builtins(m)
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": msgspec.json.encode(c.arguments).decode()},
                }
                for c in m.tool_calls
            ]
        out.append(item)
    return out


# --------------------------------------------------------------------------- Anthropic


def anthropic_content(message: Message, backend: str) -> str | list[dict[str, Any]]:
    """A message's content as Anthropic blocks: text, images (``url`` or ``base64`` source),
    the assistant's ``tool_use`` calls, a tool's ``tool_result``."""
    if message.role == "tool":
        if message.tool_call_id is None:
            raise PolicyError("a 'tool' message needs tool_call_id (the id of the call it answers)", path="$.messages")
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}]
    if isinstance(message.content, str) and not message.tool_calls:
        return message.content
    blocks: list[dict[str, Any]] = []
    parts = (TextPart(message.content),) if isinstance(message.content, str) else message.content
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append({"type": "image", "source": _anthropic_image_source(part.image_url.url, backend)})
    for c in message.tool_calls:
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments or {}})
    return blocks


def _anthropic_image_source(url: str, backend: str) -> dict[str, Any]:
    match = _DATA_URL.fullmatch(url)
    if match is not None:
        return {"type": "base64", "media_type": match["type"], "data": match["data"]}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise PolicyError(
        f"backend {backend!r}: an image must be an http(s) URL or a base64 data: URL, got {url[:40]!r}…",
        path="$.messages.content",
    )


def anthropic_tools(query: Query, backend: str) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """``tools`` and ``tool_choice`` as Anthropic takes them, with ``response_format`` as a
    forced tool (``ANTHROPIC_JSON_TOOL``) whose input schema is the requested schema
    (``{"type": "object"}`` for ``json_object``)."""
    tools = [
        {
            "name": t.function.name,
            **({"description": t.function.description} if t.function.description else {}),
            "input_schema": t.function.parameters,
        }
        for t in query.tools
    ] or None
    choice = _anthropic_tool_choice(query.tool_choice, backend)
    fmt = query.response_format
    if fmt is None or fmt.get("type") == "text":
        return tools, choice
    if tools is not None or choice is not None:
        raise PolicyError(
            f"backend {backend!r}: Anthropic takes response_format as a forced tool, so it cannot be combined "
            "with tools or tool_choice: drop one of them, or describe the format in the prompt",
            path="$.query.response_format",
        )
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise PolicyError(
                "response_format json_schema needs json_schema.schema (a JSON schema object)",
                path="$.query.response_format.json_schema.schema",
            )
    else:
        schema = {"type": "object"}
    json_tool = {
        "name": ANTHROPIC_JSON_TOOL,
        "description": "Respond with the answer as this tool's input.",
        "input_schema": schema,
    }
    return [json_tool], {"type": "tool", "name": ANTHROPIC_JSON_TOOL}


def _anthropic_tool_choice(choice: str | dict[str, Any] | None, backend: str) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
        if choice.get("type") in ("auto", "any", "tool", "none"):
            return choice  # already Anthropic's shape
    raise PolicyError(
        f"backend {backend!r}: tool_choice {choice!r} has no Anthropic equivalent: use 'auto', 'none', "
        "'required' or {'type': 'function', 'function': {'name': ...}}",
        path="$.query.tool_choice",
    )


def anthropic_refusals(query: Query, backend: str) -> None:
    """``PolicyError`` for the fields the Messages API does not take (``seed``)."""
    if query.seed is not None:
        raise PolicyError(
            f"backend {backend!r}: the Anthropic Messages API takes no seed: remove Query.seed for this "
            "backend (or pass it in Query.extra if a gateway in front of it accepts one)",
            path="$.query.seed",
        )


def tool_calls_of(blocks: Sequence[Any]) -> tuple[ToolCall, ...]:
    """The ``tool_use`` blocks of an Anthropic message as ``ToolCall``s."""
    return tuple(ToolCall(b.id or "", b.name or "", b.input) for b in blocks if b.type == "tool_use")
