"""``specexec.backends._cookies``: the backends' clients keep and send cookies as httpx does, and
hand a response to the cookie jar only when it sets one (over real loopback HTTP)."""

from __future__ import annotations

import anyio
import httpx
import pytest

from specexec.backends import OpenAICompatible
from specexec.backends._cookies import skip_cookieless_responses
from tests.backends.test_network import server

pytestmark = pytest.mark.anyio


async def cookie_server(stream: anyio.abc.ByteStream) -> None:
    """``/set`` sets ``session=abc``; ``/echo`` answers the request's ``cookie`` header (keep-alive)."""
    async with stream:
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                try:
                    buffered += await stream.receive()
                except anyio.EndOfStream:
                    return
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            path = lines[0].split()[1]
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            extra = b"set-cookie: session=abc; Path=/\r\n" if path == "/set" else b""
            body = headers.get("cookie", "-").encode()
            await stream.send(b"HTTP/1.1 200 OK\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body) + body)


async def test_a_cookie_set_by_a_response_is_sent_back_and_cookieless_responses_skip_the_jar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = skip_cookieless_responses(httpx.AsyncClient(trust_env=False))
    handed: list[str] = []
    jar_extract = client.cookies.jar.extract_cookies

    def counting(response: object, request: object) -> None:
        handed.append(str(getattr(request, "full_url", "?")))
        jar_extract(response, request)  # type: ignore[arg-type]

    monkeypatch.setattr(client.cookies.jar, "extract_cookies", counting)
    async with server(cookie_server) as port, client:
        base = f"http://127.0.0.1:{port}"
        assert (await client.get(f"{base}/echo")).text == "-"
        assert (await client.get(f"{base}/set")).text == "-"
        assert (await client.get(f"{base}/echo")).text == "session=abc"  # kept and sent back, as httpx does
    assert handed == [f"{base}/set"]  # only the response that set a cookie reached the jar
    assert dict(client.cookies) == {"session": "abc"}


def test_the_http_backends_clients_get_the_jar_and_a_client_with_its_own_is_left_alone() -> None:
    made = OpenAICompatible("x", base_url="http://127.0.0.1:9/v1", model="m")._new_client()
    assert type(made._cookies).__name__ == "_Cookies"  # type: ignore[attr-defined]

    class OwnCookies(httpx.Cookies):
        pass

    own = httpx.AsyncClient()
    own._cookies = OwnCookies()  # type: ignore[attr-defined]
    assert type(skip_cookieless_responses(own)._cookies) is OwnCookies  # type: ignore[attr-defined]
