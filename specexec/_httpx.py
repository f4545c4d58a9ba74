"""httpx and httpcore, imported so that httpcore does not import trio on asyncio.

httpcore 1.0.x runs ``import trio`` when it is imported, whenever trio is installed
(``httpcore/_synchronization.py``; the import was made conditional in encode/httpcore#692 and
encode/httpcore#946 asks for it to happen only when running on trio). That costs an asyncio
service ≈ 80–200 ms of start-up and a trio it never uses. Every specexec module gets httpx and
httpcore from here: the first import hides trio from httpcore (``sys.modules["trio"] = None``
while httpcore is imported) and gives httpcore a stand-in that imports trio on first use —
which happens only under trio, where trio is imported already. Nothing is changed when trio or
httpcore was imported before, or trio is not installed.

Import httpx from here (``from .._httpx import httpx``), never directly, in the library: the
first import decides. (While httpcore is being imported, another thread's ``import trio``
would fail; specexec imports httpx the first time an HTTP backend is imported.)

``ssl_context`` is the process's one SSL context per trust setting: building one (loading the
CA bundle) costs ≈ 40 ms of CPU, which every new client would pay — a backend called outside a
run opens a client per call.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import ssl
import sys
import types


class _TrioOnFirstUse(types.ModuleType):
    """Stands in for ``trio`` in ``owner``'s globals; imports it (and replaces itself) on first use."""

    def __init__(self, owner: types.ModuleType) -> None:
        super().__init__("trio")
        self._owner = owner

    def __getattr__(self, name: str) -> object:
        trio = importlib.import_module("trio")
        setattr(self._owner, "trio", trio)  # noqa: B010  # later lookups go straight to trio
        return getattr(trio, name)


def _import_httpcore_without_trio() -> None:
    if "trio" in sys.modules or "httpcore" in sys.modules or importlib.util.find_spec("trio") is None:
        return
    sys.modules["trio"] = None  # type: ignore[assignment]  # makes ``import trio`` raise ImportError
    try:
        import httpcore._synchronization as synchronization
    finally:
        if "trio" in sys.modules and sys.modules["trio"] is None:
            del sys.modules["trio"]
    if getattr(synchronization, "trio", False) is None:  # the layout this works around; else leave it
        setattr(synchronization, "trio", _TrioOnFirstUse(synchronization))  # noqa: B010


_import_httpcore_without_trio()

import httpcore as httpcore  # noqa: E402
import httpx as httpx  # noqa: E402

_ssl_contexts: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}


def ssl_context(trust_env: bool) -> ssl.SSLContext:
    """The SSL context httpx would build for ``verify=True`` and ``trust_env``, built once per
    process (with ``trust_env``, once per ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` value) and shared by
    every client specexec makes: pass it as ``verify=``. (httpcore sets the context's ALPN
    protocols on each connection from its client's ``http2``; specexec's clients are all HTTP/1.1.)"""
    key = (True, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else (False, None, None)
    context = _ssl_contexts.get(key)
    if context is None:
        context = _ssl_contexts[key] = httpx.create_ssl_context(trust_env=trust_env)
    return context
