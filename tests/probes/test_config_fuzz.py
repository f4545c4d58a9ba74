"""Fuzzing the probe config loader and ``--check``: any TOML document loads or raises ``PolicyError``.

Documents are built from the keys a probe config has (``[probe]`` with its canary, query and
per-backend overrides, ``[health]`` with its breaker, ``[[backends]]`` of every kind, ``[eval]``
naming a good eval file, a bad one, a missing one or an odd path) plus
unknown keys, with plausible values, edge values (``nan``, ``inf``, huge, tiny, negative,
zero) and values of the wrong type. Each is loaded with ``ProbeConfig.load`` and, when it
loads, built the way ``specexec probe --check`` and a start build it (``ProbeDaemon``: every
backend, the health config, the probe states, the schedule; nothing is sent). Anything but
``PolicyError`` fails the test, and so does a build that takes more than ``TIME_LIMIT``
seconds or allocates more than ``MEMORY_LIMIT`` bytes (``[probe] slices = 10000000`` once
asked for ~560 GB).
"""

from __future__ import annotations

import math
import signal
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import specexec.bench.eval  # noqa: F401  (imported here, not inside the memory-bounded block)
from specexec import PolicyError
from specexec.probes import ProbeConfig, ProbeDaemon
from tests.toml_text import toml_document

TIME_LIMIT = 5.0
"""Seconds one document may take to load and build (a hang fails the test instead of stalling it)."""
MEMORY_LIMIT = 64 * 1024 * 1024
"""Bytes one document's load and build may allocate at peak (a default daemon of 3 backends needs ~4 MB)."""

INT64 = 2**63 - 1
EDGE_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-9, 5e-324, 1e-300, 1e300, 1.7976931348623157e308]
EDGE_INTS = [0, -1, 1, 2, 60, 61, 1024, 1025, 65535, 65536, 10_000_000, INT64, -INT64 - 1]


# -- TOML text from a Python document -------------------------------------------------------


# -- plausible documents --------------------------------------------------------------------

scalars = st.one_of(
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGE_INTS),
    st.integers(min_value=-INT64 - 1, max_value=INT64),
    st.booleans(),
    st.text(max_size=12),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def mostly(plausible: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], share: int = 8) -> Any:
    """``plausible`` ``share`` times out of ``share + 1``, else ``odd`` (so most documents get deep)."""
    return st.integers(min_value=0, max_value=share).flatmap(lambda i: odd if i == 0 else plausible)


seconds = mostly(
    st.one_of(st.floats(min_value=0.05, max_value=3600.0), st.integers(min_value=1, max_value=600)),
    st.one_of(st.sampled_from(EDGE_FLOATS), st.sampled_from(EDGE_INTS), st.floats(allow_nan=True)),
    share=12,
)
counts = mostly(st.integers(min_value=1, max_value=100), st.one_of(st.sampled_from(EDGE_INTS), st.integers()), 12)
names = st.sampled_from(["a", "b", "c", "", "a b", "ünï", "x" * 300])


def table(fields: dict[str, st.SearchStrategy[Any]], unknown: tuple[str, ...] = ("intervall", "extra")) -> Any:
    """Dicts of some of ``fields`` (mostly plausible values, sometimes anything) and rarely an unknown key."""
    strategies = {k: mostly(v, anything, share=30) for k, v in fields.items()}
    known = st.lists(st.sampled_from(list(fields)), unique=True, max_size=6).flatmap(
        lambda chosen: st.fixed_dictionaries({k: strategies[k] for k in chosen})
    )
    extra = mostly(st.just({}), st.dictionaries(st.sampled_from(unknown), anything, max_size=1), share=30)
    return st.tuples(known, extra).map(lambda parts: {**parts[0], **parts[1]})


messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "robot"]), "content": st.text()}),
    max_size=2,
)
query = table(
    {
        "prompt": st.text(max_size=20),
        "messages": messages,
        "max_tokens": counts,
        "temperature": seconds,
        "stop": st.lists(st.text(max_size=3), max_size=2),
        "priority": counts,
    }
)
verifier = st.one_of(
    st.fixed_dictionaries({"kind": st.just("regex"), "pattern": st.sampled_from(["^4$", "(", "[", "\\d+", ""])}),
    st.fixed_dictionaries({"kind": st.just("length"), "min": counts, "max": counts}),
    st.fixed_dictionaries({"kind": st.sampled_from(["json_valid", "not_refusal", "nope"])}),
    st.fixed_dictionaries({"kind": st.just("model_is"), "model": st.text(max_size=8)}),
)
canary = table(
    {
        "query": query,
        "expect": st.sampled_from(["4", "", "...", " Paris ", "four"]),
        "verify": st.lists(verifier, max_size=2),
        "every": counts,
    }
)
schedule = {
    "interval": seconds,
    "jitter": st.one_of(st.sampled_from([0.0, 0.1, 0.999, 1.0, -0.1, math.nan]), seconds),
    "timeout": seconds,
    "query": query,
    "unhealthy_after": counts,
    "stale_after": seconds,
}
override = table(
    {**schedule, "canary": st.one_of(canary, st.booleans()), "pinned_model": names, "enabled": st.booleans()}
)
probe = table(
    {
        **schedule,
        "canary": canary,
        "max_concurrent": counts,
        "daily_budget": seconds,
        "window": seconds,
        "slices": counts,
        "min_samples": counts,
        "http": st.booleans(),
        "bind": st.sampled_from(["127.0.0.1", "::1", "localhost", "", "local host", "0.0.0.0", "999.1.1.1"]),
        "port": counts,
        "snapshot": st.sampled_from(["", "probes.msgpack", "a\x00b", "/nonexistent/dir/p.msgpack"]),
        "snapshot_interval": seconds,
        "seed": counts,
        "backends": st.dictionaries(mostly(st.sampled_from(["a", "b"]), names), override, max_size=2),
    }
)
breaker = table(
    {
        "failure_threshold": counts,
        "error_rate": seconds,
        "window": seconds,
        "min_requests": counts,
        "cooldown": seconds,
    }
)
health = table(
    {
        "window": seconds,
        "slices": counts,
        "min_samples": counts,
        "breaker": breaker,
        "probe_max_age": seconds,
        "probe_min_samples": counts,
        "max_retry_after": seconds,
        "auth_cooldown": seconds,
    }
)
latency = st.one_of(
    seconds,
    st.fixed_dictionaries({"kind": st.just("constant"), "value": seconds}),
    st.fixed_dictionaries({"kind": st.just("lognormal"), "median": seconds, "sigma": seconds}),
    st.fixed_dictionaries({"kind": st.just("uniform"), "low": seconds, "high": seconds}),
)
limits = table({"rpm": seconds, "tpm": seconds, "max_concurrency": counts})
backend_fields = {
    "name": mostly(st.sampled_from(["a", "b", "c"]), names),
    "provider": names,
    "region": names,
    "input_price": seconds,
    "output_price": seconds,
    "limits": limits,
}
simulated = table(
    {
        **backend_fields,
        "latency": latency,
        "seed": counts,
        "errors": st.dictionaries(
            mostly(st.sampled_from(["unavailable", "timeout", "rate_limited"]), st.just("bogus")),
            mostly(st.floats(min_value=0.0, max_value=1.0), seconds),
            max_size=2,
        ),
        "stall": seconds,
        "reply": st.text(max_size=8),
        "output_tokens": counts,
        "reported_model": names,
    }
).map(lambda d: {"kind": "simulated", **d})
http_fields = {
    **backend_fields,
    "model": st.sampled_from(["m", ""]),
    "base_url": st.sampled_from(["http://127.0.0.1:9/v1", "https://api.example/v1", "not a url", "ftp://x", ""]),
    "api_key_env": st.sampled_from(["SPECEXEC_FUZZ_UNSET", ""]),
    "stream": st.booleans(),
}
openai = table({**http_fields, "headers": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2)}).map(
    lambda d: {"kind": "openai", **d}
)
anthropic = table({**http_fields, "anthropic_version": st.text(max_size=10)}).map(lambda d: {"kind": "anthropic", **d})
backend = mostly(st.one_of(simulated, simulated, openai, anthropic), anything, share=20)
backends = st.lists(backend, min_size=1, max_size=3).map(  # names "a", "b", "c" (odd names: the examples below)
    lambda entries: [{**b, "name": "abc"[i]} if isinstance(b, dict) else b for i, b in enumerate(entries)]
)
GOOD_EVAL, BAD_EVAL = "@good-eval", "@bad-eval"
"""Placeholders for the paths of the eval files the ``eval_files`` fixture writes."""
eval_fields = {
    "file": st.sampled_from([GOOD_EVAL, GOOD_EVAL, BAD_EVAL, "/nonexistent/eval.toml", "", " ", "a\x00b", "."]),
    "daily_budget": mostly(st.floats(min_value=0.0, max_value=10.0), seconds),
    "interval": mostly(st.sampled_from([60, 60.0, 3600.0, 604800.0]), seconds, share=4),
    "jobs": mostly(st.integers(min_value=1, max_value=64), counts, share=4),
    "timeout": mostly(st.floats(min_value=0.05, max_value=600.0), seconds, share=4),
    "sample": counts,
    "backends": mostly(st.just(["a"]), st.lists(mostly(st.sampled_from(["a", "b", "c"]), names), max_size=3), 2),
}
eval_section = mostly(
    st.fixed_dictionaries(  # mostly a section that can build: its required keys, the others maybe
        {k: eval_fields[k] for k in ("file", "daily_budget")},
        optional={k: v for k, v in eval_fields.items() if k not in ("file", "daily_budget")},
    ),
    table(eval_fields, unknown=("intervall", "budget")),
    share=3,
)
documents = st.tuples(
    st.fixed_dictionaries(
        {"backends": mostly(backends, anything, share=30)},
        optional={
            "probe": mostly(probe, anything, share=30),
            "health": mostly(health, anything, share=30),
            "eval": mostly(eval_section, anything, share=30),
        },
    ),
    mostly(st.just({}), st.dictionaries(st.sampled_from(["prob", "extra"]), anything, max_size=1), share=30),
).map(lambda parts: {**parts[0], **parts[1]})


# -- the test -------------------------------------------------------------------------------


@contextmanager
def bounded(seconds: float, memory: int) -> Iterator[None]:
    """Fail (``AssertionError``) when the block runs longer than ``seconds`` or allocates more than ``memory``."""

    def timed_out(signum: int, frame: object) -> None:
        raise AssertionError(f"no result after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak <= memory, f"allocated {peak / 1e6:.0f} MB"
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_and_check(text: str) -> ProbeDaemon | None:
    """What ``specexec probe --check`` does: load, then build everything a start builds; ``None`` on ``PolicyError``."""
    try:
        config = ProbeConfig.load(text)
    except PolicyError as exc:
        assert exc.path.startswith("$"), exc
        event(f"load: PolicyError at {exc.path}")
        return None
    try:
        daemon = ProbeDaemon(config)
    except PolicyError as exc:
        assert exc.path.startswith("$"), exc
        event("check: PolicyError")
        return None
    event(f"built: {len(daemon.backends)} backend(s)" + (" with [eval]" if daemon.eval is not None else ""))
    return daemon


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A good eval file (one class, every backend a candidate) and one with a bad bar, by placeholder."""
    root = tmp_path_factory.mktemp("evals")
    (root / "cases.jsonl").write_text('{"prompt": "What is 1 + 1?", "reference": "2"}\n')
    good, bad = root / "good.toml", root / "bad.toml"
    cls = '[classes.sum]\ndataset = "cases.jsonl"\nscorer = { kind = "numeric" }\nmin_pass_rate = '
    good.write_text(cls + "0.9\n")
    bad.write_text(cls + "1.5\n")
    return {GOOD_EVAL: str(good), BAD_EVAL: str(bad)}


def with_eval_files(document: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    """``document`` with an ``[eval] file`` placeholder replaced by the real path."""
    section = document.get("eval")
    if isinstance(section, dict) and isinstance(section.get("file"), str) and section["file"] in files:
        return {**document, "eval": {**section, "file": files[section["file"]]}}
    return document


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(documents)
@example({"probe": {"slices": 10_000_000}})
@example({"health": {"slices": 10_000_000}})
@example({"probe": {"snapshot_interval": 1e-9}})
@example({"probe": {"window": math.inf, "interval": math.inf, "timeout": math.inf, "stale_after": math.inf}})
@example({"backends": [{"kind": "openai", "name": "o"}]})
@example({"backends": [{"kind": "simulated", "name": ""}, {"kind": "simulated", "name": "x" * 300}]})
@example({"backends": [{"kind": "simulated", "name": "a"}, {"kind": "simulated", "name": "a"}]})
@example({"backends": [{"kind": "simulated", "name": "a b"}], "probe": {"backends": {"a b": {"interval": 1}}}})
@example({"backends": [{"kind": "simulated", "name": "a"}], "eval": {"file": GOOD_EVAL, "daily_budget": 0.1}})
@example({"backends": [{"kind": "simulated", "name": "a"}], "eval": {"file": BAD_EVAL, "daily_budget": 0.1}})
@example({"backends": [{"kind": "simulated", "name": "a"}], "eval": {"file": GOOD_EVAL}})
@example(
    {
        "backends": [{"kind": "simulated", "name": "a"}],
        "eval": {"file": GOOD_EVAL, "daily_budget": 0.1, "backends": ["a"], "sample": 10_000_000},
    }
)
@example({"backends": [{"kind": "simulated", "name": "a"}], "eval": {"file": ".", "daily_budget": 0.1}})
def test_any_document_loads_or_raises_policy_error(eval_files: dict[str, str], document: dict[str, Any]) -> None:
    text = toml_document(with_eval_files(document, eval_files))
    with bounded(TIME_LIMIT, MEMORY_LIMIT):
        load_and_check(text)


eval_documents = st.fixed_dictionaries(
    {
        "backends": st.sampled_from(
            [[{"kind": "simulated", "name": "a"}], [{"kind": "simulated", "name": n} for n in "ab"]]
        ),
        "eval": mostly(eval_section, anything, share=20),
    },
    optional={"probe": mostly(probe, anything, share=30)},
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(eval_documents)
def test_any_eval_section_loads_or_raises_policy_error(eval_files: dict[str, str], document: dict[str, Any]) -> None:
    """The ``[eval]`` section on its own, with valid backends around it: it builds or is a ``PolicyError``."""
    text = toml_document(with_eval_files(document, eval_files))
    with bounded(TIME_LIMIT, MEMORY_LIMIT):
        load_and_check(text)


def test_the_toml_writer_round_trips() -> None:
    import msgspec

    document = {"probe": {"a": [1, 2.5, math.inf, 'x\x7f\n"', True], "b": {}}, "k y": -0.0}
    decoded = msgspec.toml.decode(toml_document(document))
    assert decoded["probe"]["a"][:2] == [1, 2.5] and decoded["probe"]["a"][2] == math.inf
    assert decoded["probe"]["a"][3:] == ['x\x7f\n"', True] and decoded["k y"] == 0.0


# -- found by the fuzzing in the shared [health] and [[backends]] sections ----------------------------


@pytest.mark.parametrize(
    "health", ["slices = 10000000", "window = inf", "probe_max_age = inf", "min_samples = 9223372036854775807"]
)
def test_health_values_a_service_cannot_run_with_are_refused_at_load(health: str) -> None:
    with pytest.raises(PolicyError):
        ProbeConfig.load(f'[[backends]]\nkind = "simulated"\nname = "a"\n[health]\n{health}\n')


@pytest.mark.parametrize(
    "backend",
    [
        'kind = "openai"\nname = "o"',  # no model
        'kind = "openai"\nname = "o"\nmodel = "m"\nbase_url = "not a url"',
        'kind = "openai"\nname = "o"\nmodel = "m"\ninput_price = -1.0',
        'kind = "simulated"\nname = "s"\nerrors = { unavailable = 0.9 }\nstall = 0.5',
        'kind = "simulated"\nname = "s"\nlatency = nan',
    ],
)
def test_backend_entries_are_refused_at_load_not_only_when_built(backend: str) -> None:
    with pytest.raises(PolicyError):
        ProbeConfig.load(f"[[backends]]\n{backend}\n")
