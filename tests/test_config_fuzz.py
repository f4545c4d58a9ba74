"""Fuzzing ``Runtime.from_config``: any TOML document either loads or raises ``PolicyError``.

Documents are built from the keys a config really has (and misspellings, unknown keys and
other readers' sections) with values that are plausible, out of range, NaN, infinite,
huge, negative or of the wrong type. Whatever comes in, the load must end quickly with a
runtime or a ``PolicyError`` naming the file and a key path — never another exception, a
hang or a large allocation.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import specexec
from specexec import PolicyError
from tests.toml_text import toml_document

EXAMPLES = int(os.environ.get("SPECEXEC_FUZZ_EXAMPLES", "300"))
"""Documents per run (``SPECEXEC_FUZZ_EXAMPLES=20000`` for a long hunt)."""
MAX_SECONDS = 10
"""A load that takes longer than this is a hang."""
MAX_BYTES = 96_000_000
"""Peak bytes a load may allocate (three backends with the largest health windows allowed ≈ 30 MB)."""

# --------------------------------------------------------------------------- values


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], bad_share: float = 0.2) -> st.SearchStrategy[Any]:
    """``good`` most of the time, ``bad`` with probability ``bad_share``: documents then get
    past their first error often enough to reach the checks deeper down."""
    return st.sampled_from(range(100)).flatmap(lambda r: bad if r >= 100 - 100 * bad_share else good)


def chance(draw: st.DrawFn, share: float) -> bool:
    """True with probability ``share`` (drawn so that shrinking goes to False: the plain case)."""
    return draw(st.sampled_from(range(100))) >= 100 - 100 * share


weird_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, 1.7976931348623157e308, math.nan, math.inf, -math.inf]),
)
weird_ints = st.sampled_from([0, -1, -3, 10**6, 10**9, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30])
strings = st.one_of(
    st.sampled_from(
        [
            "",
            "a",
            "(",
            "[a-",
            "{bogus}",
            "{question} {answer}",
            "a\nb",
            "a\r\nX-Injected: 1",
            "http://127.0.0.1:9/v1",
            "ftp://127.0.0.1",
            "not a url",
            "OPENAI_API_KEY",
            "sk-secret value",
            "lognormal",
        ]
    ),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(["kind", "x", "a-b", "http://127.0.0.1:9/v1", ""]), st.text(max_size=8))
"""Keys of arbitrary tables (a key is echoed in an unknown-key error, so never the fake secret)."""
scalars = st.one_of(weird_floats, weird_ints, st.integers(-5, 5), strings, st.booleans())
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=6,
)


def num(low: float, high: float) -> st.SearchStrategy[Any]:
    """A number in [low, high] (float or int) most of the time, else a weird one."""
    good = st.one_of(st.floats(low, high), st.integers(math.ceil(low), math.floor(high)))
    return mostly(good, st.one_of(weird_floats, weird_ints))


def integer(low: int, high: int) -> st.SearchStrategy[Any]:
    """An int in [low, high] most of the time, else a weird one."""
    return mostly(st.integers(low, high), st.one_of(weird_ints, weird_floats))


def table(
    fields: dict[str, st.SearchStrategy[Any]],
    *,
    required: dict[str, st.SearchStrategy[Any]] | None = None,
    wrong: float = 0.05,
    unknown: float = 0.03,
) -> st.SearchStrategy[dict[str, Any]]:
    """A table with ``required`` keys and some of ``fields``; a value is now and then
    anything at all (share ``wrong``) and now and then a key no one knows is added."""
    keys = list(fields)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {k: draw(v) for k, v in (required or {}).items()}
        for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=min(len(keys), 6))):
            out[key] = draw(anything) if chance(draw, wrong) else draw(fields[key])
        if chance(draw, unknown):
            out[draw(st.sampled_from(["bogus", "api_key", "Window", "cooldwn"]))] = draw(anything)
        return out

    return build()


breaker = table(
    {
        "failure_threshold": integer(1, 20),
        "error_rate": num(0.01, 1),
        "window": num(0.1, 600),
        "min_requests": integer(1, 100),
        "cooldown": num(0, 600),
    }
)
limits = table({"rpm": num(1, 1e5), "tpm": num(1, 1e7), "max_concurrency": integer(1, 64)})
distribution = st.deferred(
    lambda: st.one_of(
        table({"value": num(0, 10)}, required={"kind": st.just("constant")}),
        table({"median": num(0.001, 10), "sigma": num(0, 2)}, required={"kind": st.just("lognormal")}),
        table({"low": num(0, 1), "high": num(0, 10)}, required={"kind": st.just("uniform")}),
        table({"base": distribution, "factor": num(0.1, 100)}, required={"kind": st.just("scaled")}),
        table(
            {"components": st.lists(table({"weight": num(0, 10), "dist": distribution}), max_size=3)},
            required={"kind": st.just("mixture")},
        ),
        table({"median": num(0, 1)}, required={"kind": st.sampled_from(["weibull", ""])}),
    )
)
errors = st.dictionaries(
    st.sampled_from(["rate_limited", "unavailable", "timeout", "bad_response", "bad_request", "auth", "gremlins"]),
    num(0, 0.5),
    max_size=3,
)
headers = st.dictionaries(
    mostly(st.sampled_from(["x-trace", "authorization"]), st.one_of(st.just("X Bad"), strings)),
    mostly(st.sampled_from(["v", "Bearer t0ken"]), strings),
    max_size=2,
)
timeout = st.one_of(
    num(0.1, 120),
    table({"connect": num(0.1, 10), "read": num(0.1, 300), "write": num(0.1, 60), "pool": num(0.1, 60)}),
)
http = table(
    {
        "max_connections": integer(1, 200),
        "max_keepalive_connections": integer(0, 200),
        "keepalive_expiry": num(0, 120),
        "trust_env": st.booleans(),
        "clients_per_host": integer(1, 16),
    }
)
common: dict[str, st.SearchStrategy[Any]] = {
    "provider": strings,
    "region": strings,
    "input_price": num(0, 100),
    "output_price": num(0, 100),
    "limits": limits,
    "context_window": integer(1, 10**6),
    "breaker": breaker,
}
http_fields: dict[str, st.SearchStrategy[Any]] = {
    "base_url": mostly(st.sampled_from(["http://127.0.0.1:9/v1", "https://127.0.0.1:9"]), strings),
    "api_key_env": mostly(st.sampled_from(["OPENAI_API_KEY", "X_KEY"]), strings),
    "headers": headers,
    "stream": st.booleans(),
    "timeout": timeout,
    "http": http,
}
names = mostly(st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(["", "a"]), 0.05)
backend = st.one_of(
    table(
        {
            **common,
            "latency": st.one_of(num(0, 10), distribution),
            "seed": integer(0, 10**6),
            "errors": errors,
            "stall": num(0, 0.5),
            "reply": strings,
            "output_tokens": integer(0, 4096),
            "model": strings,
            "reported_model": strings,
        },
        required={"kind": st.just("simulated"), "name": names},
    ),
    table(
        {**common, **http_fields},
        required={"kind": st.just("openai"), "name": names, "model": mostly(st.just("m"), strings, 0.1)},
    ),
    table(
        {**common, **http_fields, "anthropic_version": strings},
        required={"kind": st.just("anthropic"), "name": names, "model": mostly(st.just("m"), strings, 0.1)},
    ),
)
backend = mostly(
    backend, table({"model": strings}, required={"kind": st.sampled_from(["carrier-pigeon", ""]), "name": names}), 0.03
)
health = table(
    {
        "window": num(0.1, 3600),
        "slices": integer(1, 60),
        "min_samples": integer(1, 100),
        "breaker": breaker,
        "probe_max_age": num(1, 3600),
        "probe_min_samples": integer(1, 20),
        "max_retry_after": num(0, 3600),
        "auth_cooldown": num(0, 3600),
    }
)
documents = table(
    {
        "backends": st.lists(backend, max_size=3),
        "health": health,
        "probe": anything,
        "router": anything,
    },
    required={"backends": st.lists(backend, min_size=1, max_size=3)},
    wrong=0.02,
    unknown=0.0,
).flatmap(
    lambda doc: mostly(
        st.just(doc),
        st.sampled_from(["heath", "backend", "bogus", "Health"]).map(lambda k: {**doc, k: {"x": 1}}),
        0.03,
    )
)


# --------------------------------------------------------------------------- TOML text


@contextlib.contextmanager
def no_hang(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the test run) if the block takes longer than ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"Runtime.from_config took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_or_policy_error(text: str) -> specexec.Runtime | PolicyError:
    """Load ``text`` from a file; return the runtime or the ``PolicyError``, checking time,
    memory and that the error names the file and a key path. Anything else propagates."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text(text, encoding="utf-8")
        tracemalloc.start()
        try:
            with no_hang(MAX_SECONDS):
                try:
                    outcome: specexec.Runtime | PolicyError = specexec.Runtime.from_config(path)
                except PolicyError as exc:
                    outcome = exc
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < MAX_BYTES, f"loading allocated {peak / 1e6:.0f} MB"
        if isinstance(outcome, PolicyError):
            assert outcome.source == str(path), f"error without its file: {outcome!r}"
            assert outcome.path.startswith("$"), outcome.path
            assert "sk-secret value" not in str(outcome)
        return outcome


@settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=MAX_SECONDS),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(documents)
@example({"health": {"slices": 1_000_000}})
@example({"heath": {"window": 1.0}})
@example({"backend": [{"kind": "simulated", "name": "a"}]})
@example({"backends": [{"kind": "simulated", "name": "a", "limits": {"rpm": math.nan}}]})
@example({"backends": [{"kind": "simulated", "name": "a", "latency": {"kind": "lognormal", "median": math.inf}}]})
@example({"backends": [{"kind": "openai", "name": "a", "model": "m", "headers": {"x": "a\nb"}}]})
@example({"backends": [{"kind": "simulated", "name": "a", "latency": {"kind": "scaled", "factor": 2.0}}]})
def test_any_document_loads_or_raises_policy_error(doc: dict[str, Any]) -> None:
    load_or_policy_error(toml_document(doc))


@given(st.text(max_size=200))
@settings(max_examples=EXAMPLES // 2, deadline=timedelta(seconds=MAX_SECONDS))
def test_any_text_loads_or_raises_policy_error(text: str) -> None:
    load_or_policy_error(text)


def test_deep_nesting_is_a_policy_error_not_a_recursion_error() -> None:
    for text in ("a = " + "[" * 5000 + "]" * 5000 + "\n", "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"):
        assert isinstance(load_or_policy_error(text), PolicyError)
    depth = 3000
    latency = '{kind = "scaled", factor = 1.0, base = ' * depth + '{kind = "constant", value = 1.0}' + "}" * depth
    outcome = load_or_policy_error(f'backends = [{{kind = "simulated", name = "a", latency = {latency}}}]\n')
    assert isinstance(outcome, PolicyError), outcome


def test_a_file_that_is_not_utf8_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('region = "café"\n'.encode("latin-1"))
    try:
        specexec.Runtime.from_config(path)
    except PolicyError as exc:
        assert exc.source == str(path) and "UTF-8" in str(exc)
    else:
        raise AssertionError("loaded a file that is not UTF-8")
