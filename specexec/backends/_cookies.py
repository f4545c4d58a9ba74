"""httpx's cookie jar minus its work on responses that set no cookie.

httpx hands every response to its client's cookie jar (``Cookies.extract_cookies``), which
builds a ``urllib.request.Request`` and a response adapter for ``http.cookiejar`` before the jar
finds that there is no ``Set-Cookie`` header — ≈ 7 % of a client's CPU per request to an API
that sets none (loopback, uvloop). The jar here hands a response on only when it has a
``Set-Cookie`` or ``Set-Cookie2`` header: what the jar keeps, and what the client sends back,
are the same as httpx's.
"""

from __future__ import annotations

from .._httpx import httpx

__all__ = ["skip_cookieless_responses"]


class _Cookies(httpx.Cookies):
    """``httpx.Cookies`` over the same jar; responses without a cookie header are not parsed."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep the cookies ``response`` sets (nothing to do when it sets none)."""
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def skip_cookieless_responses(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give ``client`` the jar above, over its own cookies (when it has httpx's); ``client``."""
    cookies = getattr(client, "_cookies", None)
    if type(cookies) is httpx.Cookies:
        client._cookies = _Cookies(cookies.jar)  # the same jar: nothing copied, nothing lost
    return client
