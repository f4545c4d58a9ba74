"""Which headers and URL parts hold credentials (refused in config files, redacted from errors).

Importable without httpx (``specexec.config`` uses it at ``import specexec``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

__all__ = ["credential_in_url", "is_credential_header", "url_secrets"]

_CREDENTIAL_NAME = re.compile(r"key|auth|token|secret|cookie|passw|credential|signature|\bsig\b", re.I)
"""A header or query parameter name that says its value is a credential: ``authorization``,
``proxy-authorization``, ``x-api-key``, ``api-key`` (Azure), ``x-goog-api-key``, ``cookie``,
``x-auth-token``, ``?key=``, ``?api_key=``, ``?access_token=``, ``?sig=`` (a SAS signature) …"""


def is_credential_header(name: str) -> bool:
    """Whether a header (or query parameter) named ``name`` carries a credential."""
    return _CREDENTIAL_NAME.search(name) is not None


def _split(url: str) -> tuple[str, str, str, str, str] | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return None
    return parts.scheme, parts.netloc, parts.path, parts.query, parts.fragment


def credential_in_url(url: str) -> str | None:
    """What in ``url`` is a credential (``"user info (user:password@)"``, ``"query parameter 'key'"``),
    never its value; ``None`` if nothing is."""
    parts = _split(url)
    if parts is None:
        return None
    _, netloc, _, query, _ = parts
    if "@" in netloc:
        return "user info (user:password@)"
    for name, _value in parse_qsl(query, keep_blank_values=True):
        if is_credential_header(name):
            return f"query parameter {name!r}"
    return None


def url_secrets(url: str) -> tuple[str, ...]:
    """The credential values ``url`` holds (user name and password, secret query values, raw and
    percent-decoded): what an error about it must not show."""
    parts = _split(url)
    if parts is None:
        return ()
    _, netloc, _, query, _ = parts
    found: list[str] = []
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        found += [userinfo, *userinfo.split(":", 1)]
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if value and is_credential_header(name):
            found.append(value)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if value and is_credential_header(name):
            found.append(value)
    return tuple(dict.fromkeys(s for s in found if len(s) >= 3))  # "a" would redact every "a"
