"""TOML loading with errors that say where: file, key path, what was expected."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import msgspec

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
    return source, None


def decode_toml(source: str | Path, type_: type[T], *, ignore: Sequence[str] = ()) -> T:
    """Decode TOML into ``type_``, turning every error into a ``PolicyError`` with file and key path.

    ``ignore`` lists top-level keys to drop before validation (``"*"``: every key ``type_``
    does not know).
    """
    text, origin = read_toml_source(source)
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}", source=origin) from None
    if ignore:
        known = set(getattr(type_, "__struct_fields__", ()))
        raw = {k: v for k, v in raw.items() if k in known or ("*" not in ignore and k not in ignore)}
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, origin) from None


def validation_error(exc: msgspec.ValidationError, origin: str | None) -> PolicyError:
    """A msgspec validation error as a ``PolicyError`` with the key path pulled out."""
    message = str(exc)
    path = "$"
    m = re.search(r" - at `(\$[^`]*)`$", message)
    if m:
        path, message = m.group(1), message[: m.start()]
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
