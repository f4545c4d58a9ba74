"""TOML loading with errors that say where: file, key path, what was expected."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
import msgspec.inspect as mi

from ._errors import PolicyError

T = TypeVar("T")


def read_toml_source(source: str | Path) -> tuple[str, str | None]:
    """``(text, origin)``: a ``Path`` or a one-line string without ``=`` is a file to read."""
    if isinstance(source, Path) or ("\n" not in source and "=" not in source):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise PolicyError(f"cannot read config file: {exc.strerror}", source=str(path)) from None
        except UnicodeDecodeError as exc:
            raise PolicyError(
                f"config file is not UTF-8 text (byte {exc.start}): save it as UTF-8", source=str(path)
            ) from None
        except ValueError as exc:  # e.g. a NUL in the name
            raise PolicyError(f"not a usable file name: {exc}", source=repr(str(source))) from None
    return source, None


def decode_toml(source: str | Path, type_: type[T], *, ignore: Sequence[str] = (), sections: bool = False) -> T:
    """Decode TOML into ``type_``, turning every error into a ``PolicyError`` with file and key path.

    A top-level key ``type_`` does not know is an error that names the closest known one
    (``unknown section [heath]; did you mean [health]?``), unless it is listed in ``ignore``
    (other readers' sections, dropped before validation); ``"*"`` in ``ignore`` drops every
    unknown key. ``sections``: the top-level keys are sections (the error says so). Errors
    raised by a nested struct's ``__post_init__`` keep that struct's path.
    """
    text, origin = read_toml_source(source)
    error = _decoded(text, type_, ignore, sections, origin)
    if isinstance(error, PolicyError):
        del text  # no frame of the error's traceback holds the file's text (a secret refused in it)
        raise error  # outside any `except`: no chain to msgspec's error and the frames it holds
    return error


def _decoded(text: str, type_: type[T], ignore: Sequence[str], sections: bool, origin: str | None) -> T | PolicyError:
    """``decode_toml``'s work: the value, or the ``PolicyError`` to raise (returned, as the HTTP
    backends return an ``AuthError``, so that this frame and its locals are gone when it is raised)."""
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        return PolicyError(f"not valid TOML: {exc}", source=origin)
    except RecursionError:
        return PolicyError(f"not valid TOML: nested more than {_MAX_DEPTH_HINT} levels deep", source=origin)
    known = tuple(getattr(type_, "__struct_fields__", ()))
    config = getattr(type_, "__struct_config__", None)
    if known and isinstance(raw, dict) and getattr(config, "forbid_unknown_fields", False):
        if "*" not in ignore:
            for key, value in raw.items():
                if key not in known and key not in ignore:
                    return unknown_top_level(key, value, type_, ignore, origin, sections=sections)
        raw = {k: v for k, v in raw.items() if k in known}
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        return validation_error(exc, origin, type_)
    except RecursionError:
        return PolicyError(f"nested more than {_MAX_DEPTH_HINT} levels deep", source=origin)


_MAX_DEPTH_HINT = "a few hundred"


def keyed_table_error(source: str | Path, keys: Sequence[str], type_: type) -> PolicyError | None:
    """The error of the first table under the TOML key path ``keys`` (a dict of tables, such as
    ``[probe.backends.NAME]`` for ``("probe", "backends")``) that does not convert to ``type_``,
    as a ``PolicyError`` whose path names the table's key (``$.probe.backends.NAME.interval``).

    msgspec writes a dict value's path as ``[...]``: checking each table on its own says which
    one it was. ``None`` when every table converts, or when the text is not TOML or has no such
    dict (the full decode reports those).
    """
    text, origin = read_toml_source(source)
    try:
        raw: object = msgspec.toml.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None
    for key in keys:
        raw = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(raw, dict):
        return None
    prefix = "$." + ".".join(keys)
    for name, table in raw.items():
        try:
            msgspec.convert(table, type_)
        except (msgspec.ValidationError, PolicyError) as exc:
            inner = validation_error(exc, None, type_) if isinstance(exc, msgspec.ValidationError) else exc
            message = str(inner).removesuffix(f" (at {inner.path})")
            return PolicyError(message, path=f"{prefix}.{name}{inner.path[1:]}", source=origin)
    return None


def _table_style(t: mi.Type) -> str:
    """How a field of this type is written at the top level of a TOML file: ``[[{}]]``, ``[{}]`` or ``{}``."""

    def is_table(t: mi.Type) -> bool:
        if isinstance(t, mi.UnionType):
            members = [m for m in t.types if not isinstance(m, mi.NoneType)]
            return bool(members) and all(is_table(m) for m in members)
        return isinstance(t, (mi.StructType, mi.DictType, mi.TypedDictType, mi.DataclassType))

    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        t = members[0] if len(members) == 1 else t
    if isinstance(t, (mi.ListType, mi.VarTupleType)) and is_table(t.item_type):
        return "[[{}]]"
    return "[{}]" if is_table(t) else "{}"


def unknown_top_level(
    key: str, value: object, type_: type, ignore: Sequence[str], origin: str | None, *, sections: bool = False
) -> PolicyError:
    """The error for a top-level ``key`` that ``type_`` does not know, naming the closest known one.

    With ``sections`` (a file of sections, such as ``RuntimeConfig``'s) tables are named as
    written (``unknown section [heath]; did you mean [health]?``) and the message lists the
    file's sections and the skipped ones; otherwise ``unknown key 'x'; did you mean 'y'?``.
    """
    names = list(getattr(type_, "__struct_fields__", ()))
    styles = dict.fromkeys(names, "{}")
    if sections:
        try:
            styles = {f.name: _table_style(f.type) for f in mi.type_info(type_).fields}  # type: ignore[attr-defined]
        except Exception:  # a type msgspec cannot describe: name the sections plainly
            styles = dict.fromkeys(names, "[{}]")
    skipped = sorted(name for name in ignore if name != "*")
    close = difflib.get_close_matches(key, [*styles, *skipped], n=1, cutoff=0.6)
    if not sections:
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        return PolicyError(
            f"unknown key {key!r}{suggestion} (check its spelling; known: {', '.join(names)})",
            path=f"$.{key}",
            source=origin,
        )
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        written, what = f"[[{key}]]", "section"
    elif isinstance(value, dict):
        written, what = f"[{key}]", "section"
    else:
        written, what = repr(key), "key"
    suggestion = f"; did you mean {styles.get(close[0], '[{}]').format(close[0])}?" if close else "."
    known = " and ".join(", ".join(style.format(n) for n, style in styles.items()).rsplit(", ", 1))
    others = ", ".join(f"[{name}]" for name in skipped)
    others_text = f" ({others} are skipped: other readers of the file own them)" if others else ""
    return PolicyError(
        f"unknown {what} {written}{suggestion} This file's sections are {known}{others_text}. "
        f"Fix the spelling, or declare a section that another program reads with extra=({key!r},).",
        path=f"$.{key}",
        source=origin,
    )


def validation_error(exc: msgspec.ValidationError, origin: str | None, type_: object = None) -> PolicyError:
    """A msgspec validation error as a ``PolicyError`` with the key path pulled out.

    With ``type_`` (the type that was being decoded) a bad enum value (a ``Literal``, an
    ``Enum``, a tagged union's tag) says which values the key takes.
    """
    message = str(exc)
    path = "$"
    m = re.search(r" - at `(\$[^`]*)`$", message)
    if m:
        path, message = m.group(1), message[: m.start()]
    if type_ is not None:
        message = with_allowed_values(message, path, type_)
    m = re.search(r" \(at (\$[^)]*)\)$", message)  # a PolicyError raised while validating a nested struct
    if m:
        inner, message = m.group(1), message[: m.start()]
        path = inner if path == "$" else path + inner[1:]  # its path is relative to that struct
    m = re.search(r"unknown field `([^`]+)`", message)
    if m:
        key = m.group(1)
        path = f"{path}.{key}"
        if key in {"api_key", "key", "token", "secret"}:
            message = f"secrets are not read from files: remove {key!r} and name an environment variable in api_key_env"
        else:
            message = f"unknown key {key!r} (check its spelling)"
    return PolicyError(message, path=path, source=origin)


def with_allowed_values(message: str, path: str, type_: object) -> str:
    """msgspec's ``message`` about a bad enum value at ``path`` of ``type_`` (a ``Literal``, an
    ``Enum``, a tagged union's tag) with the values the key takes and the closest one; any other
    message unchanged."""
    m = re.fullmatch(r"Invalid (?:enum )?value (.+)", message)
    return message + _expected_values(type_, path, m.group(1)) if m else message


_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _expected_values(type_: object, path: str, got: str) -> str:
    """``": expected one of 'a', 'b'"`` (and the closest one) for the enum at ``path`` of ``type_``;
    ``""`` when the path does not lead to one."""
    try:
        values = _enum_values(mi.type_info(type_), path)
    except Exception:  # a type msgspec cannot describe: the message stays as msgspec wrote it
        return ""
    if not values:
        return ""
    text = f": expected one of {', '.join(repr(v) for v in values)}"
    names = [v for v in values if isinstance(v, str)]
    close = difflib.get_close_matches(got.strip("'\""), names, n=1, cutoff=0.6)
    return text + (f"; did you mean {close[0]!r}?" if close else "")


def _members(types: Sequence[mi.Type]) -> list[mi.Type]:
    """``types`` with unions flattened and constraints (``Annotated``) unwrapped."""
    out: list[mi.Type] = []
    for t in types:
        while isinstance(t, mi.Metadata):
            t = t.type
        out.extend(_members(t.types) if isinstance(t, mi.UnionType) else [t])
    return out


def _enum_values(root: mi.Type, path: str) -> list[object]:
    """The values allowed at ``path`` (msgspec's ``$.a[0].b``, ``[...]`` for a table's value)."""
    types = [root]
    steps = list(_PATH_STEP.finditer(path))
    for i, step in enumerate(steps):
        members = _members(types)
        key, index = step.group(1), step.group(2)
        if key is not None:
            tagged = [m for m in members if isinstance(m, mi.StructType) and m.tag_field == key]
            if tagged and i == len(steps) - 1:
                return [m.tag for m in tagged if m.tag is not None]
            types = [
                f.type
                for m in members
                if isinstance(m, (mi.StructType, mi.TypedDictType, mi.DataclassType))
                for f in m.fields
                if f.encode_name == key
            ]
        elif index == "...":
            types = [m.value_type for m in members if isinstance(m, mi.DictType)]
        else:
            types = [m.item_type for m in members if isinstance(m, (mi.ListType, mi.VarTupleType))]
            types += [
                m.item_types[int(index)]
                for m in members
                if isinstance(m, mi.TupleType) and int(index) < len(m.item_types)
            ]
        if not types:
            return []
    values: list[object] = []
    for m in _members(types):
        if isinstance(m, mi.LiteralType):
            values.extend(v for v in m.values if v not in values)
        elif isinstance(m, mi.EnumType):
            values.extend(e.value for e in m.cls if e.value not in values)
    return values
