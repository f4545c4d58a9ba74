"""Secrets come from the environment: credentials in a config file's ``headers`` or ``base_url``
are refused (naming the file, the key path and the variable to use instead), ``headers_env``
sends a header from the environment, and a ``base_url``'s user info and secret query values
never reach a repr, an error, its chain or a trace (real loopback HTTP to the mock fleet)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import pytest

from specexec import AuthError, NoAcceptableResponse, Policy, PolicyError, Query, Runtime, Unavailable
from specexec.backends import Anthropic, OpenAICompatible
from specexec.bench._ports import free_port
from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import TEST_API_KEY
from specexec.config import AnthropicConfig, OpenAIConfig, RuntimeConfig, load_backends

from .conftest import FAKE_KEY
from .test_hardening import texts_of

QUERY = Query("Say something.", max_tokens=8)
ENV = "SPECEXEC_SECRETS_REVIEW_KEY"
PASSWORD = "hunter2-PASSWORD-xyz"
QUERY_KEY = "qk-QUERYSECRET-987654"

CREDENTIAL_HEADERS = ["authorization", "Authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"]
CREDENTIAL_URLS = [
    f"https://user:{PASSWORD}@api.example.com/v1",
    f"https://{PASSWORD}@api.example.com/v1",
    f"https://api.example.com/v1?key={QUERY_KEY}",
    f"https://api.example.com/v1?api-version=2024-06-01&api_key={QUERY_KEY}",
    f"https://api.example.com/v1?token={QUERY_KEY}",
    f"https://api.example.com/v1?access_token={QUERY_KEY}",
]


def shown(error: BaseException) -> list[str]:
    """What a config error shows: message, repr, the formatted exception and its chain (frame
    locals: ``frame_locals``)."""
    return ["".join(traceback.format_exception(error)), repr(error), repr(error.__cause__), repr(error.__context__)]


def entry(kind: str, body: str) -> str:
    return f'[[backends]]\nkind = "{kind}"\nname = "b"\nmodel = "m"\n{body}\n'


def frame_locals(error: BaseException) -> list[str]:
    """The repr of every local of every frame of ``error``'s traceback and of its chain's (what
    an error reporter that captures locals, such as Sentry's, would send)."""
    found: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename != __file__:  # the test's own frame holds the file's text
                found += [repr(value) for value in tb.tb_frame.f_locals.values()]
            tb = tb.tb_next
        todo += [current.__cause__, current.__context__]
    return found


# --------------------------------------------------------------------------- config files


@pytest.mark.parametrize(
    "body",
    [
        f'headers = {{ authorization = "Bearer {FAKE_KEY}" }}',  # refused by the struct's own check
        f'headers = {{ note = "{FAKE_KEY}" }}\ntimeout = "slow"',  # any other error in the same file
        f'headers = {{ note = "{FAKE_KEY}" }}\n[[backends',  # not TOML
        f'headers = {{ note = "{FAKE_KEY}" }}\n[surprise]',  # an unknown section
    ],
    ids=["credential", "bad-value", "not-toml", "unknown-section"],
)
def test_no_frame_of_a_config_errors_traceback_holds_the_files_text(tmp_path: Path, body: str) -> None:
    path = tmp_path / "backends.toml"
    path.write_text(entry("openai", body))
    with pytest.raises(PolicyError) as info:
        RuntimeConfig.load(path)
    assert not [text for text in frame_locals(info.value) if FAKE_KEY in text]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("header", [*CREDENTIAL_HEADERS, "x-goog-api-key", "x-auth-token"])
def test_a_credential_header_in_a_config_file_is_refused(tmp_path: Path, kind: str, header: str) -> None:
    path = tmp_path / "backends.toml"
    path.write_text(entry(kind, f'headers = {{ "{header}" = "Bearer {FAKE_KEY}" }}'))
    with pytest.raises(PolicyError) as info:
        RuntimeConfig.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.endswith(f"(at $.backends[0].headers.{header})")
    assert "headers_env" in message and "api_key_env" in message  # what to do instead
    for text in shown(info.value):
        assert FAKE_KEY not in text and FAKE_KEY[:7] not in text


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_credentials_in_a_config_files_base_url_are_refused(tmp_path: Path, kind: str, url: str) -> None:
    path = tmp_path / "backends.toml"
    path.write_text(entry(kind, f'base_url = "{url}"'))
    with pytest.raises(PolicyError) as info:
        RuntimeConfig.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.endswith("(at $.backends[0].base_url)")
    assert "api_key_env" in message and "headers_env" in message
    for text in shown(info.value):
        assert PASSWORD not in text and QUERY_KEY not in text


def test_the_config_structs_refuse_credentials_built_in_python_too() -> None:
    # a config struct is what a file says; credentials given in Python go to the backend's constructor
    for cls in (OpenAIConfig, AnthropicConfig):
        with pytest.raises(PolicyError, match="headers_env"):
            cls(name="b", model="m", headers={"authorization": f"Bearer {FAKE_KEY}"})
        with pytest.raises(PolicyError, match="base_url"):
            cls(name="b", model="m", base_url=CREDENTIAL_URLS[0])


def test_plain_headers_and_query_parameters_still_load(tmp_path: Path) -> None:
    text = entry(
        "openai",
        'base_url = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01"\n'
        'headers = { "openai-organization" = "org-1", "x-trace" = "t" }\nheaders_env = { "api-key" = "AZURE_KEY" }',
    )
    config = RuntimeConfig.load(text)
    b = config.backends[0]
    assert isinstance(b, OpenAIConfig) and b.headers_env == {"api-key": "AZURE_KEY"}
    assert "AZURE_KEY" in repr(config) and "org-1" in repr(config)


@pytest.mark.parametrize(
    ("kind", "body", "path", "word"),
    [
        ("openai", 'headers_env = { "api-key" = "not a name" }', "$.backends[0].headers_env.api-key", "NAME"),
        ("openai", 'headers_env = { "bad name" = "ENV" }', "$.backends[0].headers_env", "header name"),
        (
            "openai",
            'headers = { "x-a" = "1" }\nheaders_env = { "X-A" = "ENV" }',
            "$.backends[0].headers_env.X-A",
            "both",
        ),
        ("anthropic", 'headers_env = { "x-api-key" = "ENV" }', "$.backends[0].headers_env.x-api-key", "api_key_env"),
        # Before: accepted, one of the two silently dropped (header names are case-insensitive)
        ("openai", 'headers = { "X-Org" = "a", "x-org" = "b" }', "$.backends[0].headers.x-org", "twice"),
        ("openai", 'headers_env = { "X-Org" = "A", "x-org" = "B" }', "$.backends[0].headers_env.x-org", "twice"),
        (
            "openai",
            'api_key_env = "K"\nheaders_env = { authorization = "ENV" }',
            "$.backends[0].headers_env.authorization",
            "api_key_env",
        ),
    ],
)
def test_bad_headers_env_entries_are_refused_with_their_path(kind: str, body: str, path: str, word: str) -> None:
    with pytest.raises(PolicyError, match=word) as info:
        RuntimeConfig.load(entry(kind, body))
    assert str(info.value).endswith(f"(at {path})")


def test_python_api_credentials_stay_out_of_reprs() -> None:
    url = f"https://user:{PASSWORD}@api.example.com/v1?key={QUERY_KEY}"
    for backend in (
        OpenAICompatible("o", base_url=url, model="m", headers={"authorization": f"Bearer {FAKE_KEY}"}),
        Anthropic("a", base_url=url, model="m", headers={"x-api-key": FAKE_KEY}),
    ):
        shown = repr(backend) + str(backend)
        assert FAKE_KEY not in shown and PASSWORD not in shown and QUERY_KEY not in shown


# --------------------------------------------------------------------------- over HTTP


@pytest.mark.anyio
async def test_headers_env_sends_the_header_from_the_environment(
    fleet: FleetProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keyed-us checks Authorization: Bearer; a config names the variable, the value stays in the environment
    body = f'base_url = "{fleet.base_url("keyed-us")}"\nheaders_env = {{ authorization = "{ENV}" }}'
    (backend,) = load_backends(entry("openai", body))
    value = f"Bearer {TEST_API_KEY}"
    monkeypatch.setenv(ENV, value)
    assert (await backend.complete(QUERY)).text
    monkeypatch.setenv(ENV, value + "-wrong")
    with pytest.raises(AuthError) as info:
        await backend.complete(QUERY)
    for text in texts_of(info.value):
        assert value not in text and TEST_API_KEY not in text
    monkeypatch.delenv(ENV)
    with pytest.raises(AuthError, match=ENV) as info:
        await backend.complete(QUERY)
    assert "headers_env" in str(info.value)


@pytest.mark.anyio
async def test_headers_env_through_the_python_api(fleet: FleetProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # keyed-gamma checks x-api-key: without api_key_env, headers_env may send it
    backend = Anthropic(
        "k", base_url=fleet.base_url("keyed-gamma"), model="m", api_key_env=None, headers_env={"X-Api-Key": ENV}
    )
    monkeypatch.setenv(ENV, TEST_API_KEY)
    assert (await backend.complete(QUERY)).text
    assert TEST_API_KEY not in repr(backend)


def _assert_clean(texts: list[str]) -> None:
    for text in texts:
        assert PASSWORD not in text and QUERY_KEY not in text and "user:" not in text


@pytest.mark.anyio
@pytest.mark.parametrize("cls", [OpenAICompatible, Anthropic])
async def test_url_credentials_stay_out_of_errors_and_traces(fleet: FleetProcess, cls: type[Any]) -> None:
    port = free_port()
    dead = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1?key={QUERY_KEY}"
    down = fleet.base_url("down-us").replace("http://", f"http://user:{PASSWORD}@") + f"?token={QUERY_KEY}"
    backends = [
        cls("dead", base_url=dead, model="m", api_key_env=None),
        OpenAICompatible("down", base_url=down, model="m"),
    ]
    traces: list[bytes] = []
    async with Runtime(backends, sinks=[lambda t: traces.append(t.to_json())]) as rt:
        with pytest.raises(NoAcceptableResponse) as info:
            await rt.run(QUERY, Policy.failover(["dead", "down"]))
    errors = info.value.causes
    assert [type(e) for e in errors] == [Unavailable, Unavailable]
    assert "status=503" in str(errors[1]) and f"127.0.0.1:{port}" in str(errors[0])
    texts = [*texts_of(info.value), *(t for e in errors for t in texts_of(e)), *(t.decode() for t in traces)]
    texts += [json.dumps([a.reason for a in info.value.attempts]), repr(info.value.trace)]
    _assert_clean(texts)
