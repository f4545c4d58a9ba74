"""Built-in verifiers, composition, and callables of every shape."""

from __future__ import annotations

import msgspec
import pytest

from specexec import Query, Response, Verdict, verifiers

Q = Query("q")


def r(text: str, model: str | None = "m-2026-01-01") -> Response:
    return Response(text, model=model)


class Answer(msgspec.Struct):
    value: int


async def verdict(v: object, text: str, model: str | None = "m-2026-01-01") -> Verdict:
    return await verifiers.check([v], Q, r(text, model))  # type: ignore[list-item]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_builtins() -> None:
    assert (await verdict(verifiers.json_valid(), '{"a": 1}')).accept
    assert (await verdict(verifiers.json_valid(), '```json\n{"a": 1}\n```')).accept
    assert not (await verdict(verifiers.json_valid(), "{a: 1}")).accept
    assert (await verdict(verifiers.matches_schema(Answer), '{"value": 3}')).accept
    rejected = await verdict(verifiers.matches_schema(Answer), '{"value": "x"}')
    assert not rejected.accept and "value" in rejected.reason
    assert (await verdict(verifiers.regex(r"\d+"), "the answer is 42")).accept
    assert not (await verdict(verifiers.regex(r"\d+", fullmatch=True), "the answer is 42")).accept
    assert not (await verdict(verifiers.length(min=5), "abc")).accept
    assert not (await verdict(verifiers.length(max=2), "abc")).accept
    assert (await verdict(verifiers.length(1, 3), "abc")).accept
    assert not (await verdict(verifiers.not_refusal(), "I'm sorry, but I can't help with that.")).accept
    assert (await verdict(verifiers.not_refusal(), "Sure: 42.")).accept
    assert (await verdict(verifiers.model_is("m-2026-01-01"), "x")).accept
    assert not (await verdict(verifiers.model_is("m-2026-01-01"), "x", model="m-2026-02-01")).accept
    assert not (await verdict(verifiers.model_is("m-2026-01-01"), "x", model=None)).accept


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_composition_and_callables() -> None:
    both = verifiers.all_of(verifiers.json_valid(), verifiers.length(max=5))
    assert not (await verdict(both, '{"long": true}')).accept
    either = verifiers.any_of(verifiers.regex("^yes$"), verifiers.regex("^no$"))
    assert (await verdict(either, "no")).accept
    miss = await verdict(either, "maybe")
    assert not miss.accept and "none accepted" in miss.reason

    async def async_ok(query: Query, response: Response) -> bool:
        return True

    def bad_return(query: Query, response: Response) -> int:
        return 3

    def raises(query: Query, response: Response) -> bool:
        raise ValueError("boom")

    assert (await verdict(async_ok, "x")).accept
    assert not (await verdict(lambda q, resp: False, "x")).accept
    assert "expected Verdict or bool" in (await verdict(bad_return, "x")).reason
    assert "raised ValueError: boom" in (await verdict(raises, "x")).reason


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="bad pattern"):
        verifiers.regex("(")
    with pytest.raises(ValueError, match="min <= max"):
        verifiers.length(5, 2)


def test_builtins_load_from_toml_shapes() -> None:
    spec = msgspec.convert(
        [{"kind": "all_of", "verifiers": [{"kind": "json_valid"}, {"kind": "regex", "pattern": "a"}]}],
        list[verifiers.VerifierSpec],
    )
    assert spec == [verifiers.all_of(verifiers.json_valid(), verifiers.regex("a"))]


# --------------------------------------------------------------------------- issue 10: tool calls, JSON schema

from specexec import ToolCall  # noqa: E402

POINT_SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
    "required": ["x", "y"],
}


class Point(msgspec.Struct):
    x: int
    y: int


def called(*calls: ToolCall) -> Response:
    return Response("", tool_calls=calls)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("schema", [POINT_SCHEMA, Point], ids=["json-schema", "msgspec-type"])
async def test_tool_call_matches_name_and_schema(schema: object) -> None:
    v = verifiers.tool_call("plot", schema=schema)
    good = called(ToolCall("c1", "plot", {"x": 1, "y": 2}))
    assert (await verifiers.check([v], Q, good)).accept
    wrong_args = await verifiers.check([v], Q, called(ToolCall("c1", "plot", {"x": "one"})))
    assert not wrong_args.accept and "plot" in wrong_args.reason
    other = await verifiers.check([v], Q, called(ToolCall("c1", "draw", {"x": 1, "y": 2})))
    assert not other.accept and "plot" in other.reason
    none = await verifiers.check([v], Q, r("just text"))
    assert not none.accept and "no tool call" in none.reason
    # any name: one matching call is enough
    anyname = verifiers.tool_call(schema=schema)
    both = called(ToolCall("a", "draw", {"z": 0}), ToolCall("b", "plot", {"x": 1, "y": 2}))
    assert (await verifiers.check([anyname], Q, both)).accept


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_json_schema_on_text() -> None:
    v = verifiers.json_schema(POINT_SCHEMA)
    assert (await verdict(v, '{"x": 1, "y": 2}')).accept
    bad = await verdict(v, '{"x": 1}')
    assert not bad.accept and "'y' is a required property" in bad.reason
    assert not (await verdict(v, "not json")).accept
    assert (await verdict(verifiers.json_schema(Point), '{"x": 1, "y": 2}')).accept


def test_json_schema_and_tool_call_load_from_toml_specs() -> None:
    spec = msgspec.convert({"kind": "json_schema", "schema": POINT_SCHEMA}, verifiers.VerifierSpec)
    assert isinstance(spec, verifiers.JsonSchema)
    spec2 = msgspec.convert({"kind": "tool_call", "name": "plot"}, verifiers.VerifierSpec)
    assert isinstance(spec2, verifiers.ToolCallMatches)


def test_an_invalid_json_schema_is_refused_at_construction() -> None:
    from specexec import PolicyError

    with pytest.raises(PolicyError, match="schema"):
        verifiers.json_schema({"type": "no-such-type"})
