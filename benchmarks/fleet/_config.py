"""The fleet's configuration: msgspec Structs, TOML loading and saving.

A fleet is a list of *deployments* (one model at one provider in one region, served under
``/NAME/v1``), a seed and a list of scheduled events. Every struct forbids unknown fields
and is frozen; distributions and events are ``kind``-tagged unions. Errors name the file
and the key path::

    fleet.toml: Expected `float`, got `str` (at $.deployments[1].latency.median)

Configs are built in Python too (``FleetConfig(deployments=(Deployment(...),))``);
:meth:`FleetConfig.validated` runs the same checks as loading a file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_REFUSAL",
    "Brownout",
    "Constant",
    "Deployment",
    "Distribution",
    "Event",
    "Faults",
    "FleetConfig",
    "FleetConfigError",
    "LogNormal",
    "Mixture",
    "Outage",
    "RateLimit",
    "Uniform",
    "Weighted",
]

#: The example fleet shipped with the package (six deployments, three providers, three regions).
DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.toml")

Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0.0)]
DeploymentName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)]


class FleetConfigError(ValueError):
    """A fleet config is invalid; the message names the source (file) and the key path.

    ``source`` is the file (or ``"<config>"`` for a config built in Python), ``path`` the
    key path (``$.deployments[1].latency.median``) and ``detail`` what was wrong there.
    """

    def __init__(self, detail: str, *, source: str, path: str = "$") -> None:
        self.detail = detail
        self.source = source
        self.path = path
        super().__init__(f"{source}: {detail} (at {path})")


class _Base(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every config struct: unknown keys are errors, values are immutable."""


# --------------------------------------------------------------------------- distributions


class _Dist(_Base, tag_field="kind", frozen=True, kw_only=True):
    """Common fields of every distribution: an optional slow tail.

    With probability ``tail_prob`` a draw is multiplied by ``tail_factor`` ("95 % as drawn,
    5 % ×10").
    """

    tail_prob: Probability = 0.0
    tail_factor: Annotated[float, msgspec.Meta(ge=1.0)] = 10.0


class Constant(_Dist, tag="constant", frozen=True, kw_only=True):
    """Always ``value`` seconds (before the tail)."""

    value: Seconds = 0.0


class Uniform(_Dist, tag="uniform", frozen=True, kw_only=True):
    """Uniform between ``low`` and ``high`` seconds."""

    low: Seconds = 0.0
    high: Seconds

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"uniform high ({self.high}) is below low ({self.low})")


class LogNormal(_Dist, tag="lognormal", frozen=True, kw_only=True):
    """Lognormal with the given ``median`` seconds and shape ``sigma`` (of the underlying normal)."""

    median: PositiveSeconds
    sigma: Annotated[float, msgspec.Meta(ge=0.0)] = 0.25


class Weighted(_Base, frozen=True, kw_only=True):
    """One component of a :class:`Mixture`: a distribution and its (relative) weight."""

    weight: Annotated[float, msgspec.Meta(gt=0.0)]
    dist: Constant | Uniform | LogNormal


class Mixture(_Dist, tag="mixture", frozen=True, kw_only=True):
    """Pick one component by weight (weights need not sum to 1), then draw from it."""

    components: Annotated[tuple[Weighted, ...], msgspec.Meta(min_length=1)]


#: A latency distribution, tagged by ``kind``.
Distribution: TypeAlias = Constant | Uniform | LogNormal | Mixture


# --------------------------------------------------------------------------- faults

#: What a ``refusal`` fault answers unless ``refusal_text`` says otherwise.
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."


class Faults(_Base, frozen=True, kw_only=True):
    """Fault injection: each field is a probability per request, drawn independently (seeded).

    Failing faults take the first that fires in this order: ``reset`` (abort the TCP
    connection, no response), ``stall`` (never answer; held until the client goes away),
    ``context_window`` (the provider's exact 400 for a prompt over the context window:
    OpenAI's ``context_length_exceeded`` body, Anthropic's "prompt is too long"),
    ``error_500``, ``error_503``, ``overloaded_529`` (error responses in the deployment's
    format), ``malformed`` (200 whose body is not valid JSON), ``cut_short`` (a stream ended
    after half its tokens with no finish reason: OpenAI ``data: [DONE]`` without a
    ``finish_reason`` chunk or usage, as llama.cpp's server ends a running stream when
    another request takes its slot; Anthropic a ``message_delta`` whose ``stop_reason`` is
    null, then ``message_stop``; a non-streamed request is answered whole), ``stall_after`` (a
    stream that sends its first ``stall_after_tokens`` tokens, then nothing — no token, no end —
    until the client goes away, as a wedged worker or a proxy holding the connection does; a
    non-streamed request is never answered, like ``stall``). Modifiers apply on top of a
    normal answer: ``slow_drip`` (tokens ``slow_drip_interval`` seconds apart),
    ``wrong_model`` (reports ``drift_model``, default ``model + "-drifted"``), ``no_usage``
    (omits token usage), ``refusal`` (the answer is ``refusal_text``, default "I'm sorry, but
    I can't help with that.", finish reason ``stop``, in place of the text, tool call or JSON
    the request would have had). ``error_drip`` > 0: an injected ``error_500``/``error_503``/
    ``overloaded_529``, and a 429 (the ``rpm`` quota's or a scheduled rate limit's), sends its
    head at once and its body one byte every ``error_drip`` seconds (a slow error body).
    """

    error_500: Probability = 0.0
    error_503: Probability = 0.0
    overloaded_529: Probability = 0.0
    reset: Probability = 0.0
    malformed: Probability = 0.0
    cut_short: Probability = 0.0
    stall_after: Probability = 0.0
    context_window: Probability = 0.0
    stall: Probability = 0.0
    slow_drip: Probability = 0.0
    wrong_model: Probability = 0.0
    no_usage: Probability = 0.0
    refusal: Probability = 0.0
    slow_drip_interval: Seconds = 1.0
    error_drip: Seconds = 0.0
    drift_model: str | None = None
    stall_after_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1
    refusal_text: Annotated[str, msgspec.Meta(min_length=1)] = DEFAULT_REFUSAL


# --------------------------------------------------------------------------- deployments


class Deployment(_Base, frozen=True, kw_only=True):
    """One model at one provider in one region, served under ``/NAME/v1``.

    Latency: time to first token drawn from ``latency``, then ``per_token`` seconds per
    output token. Output tokens = min(request ``max_tokens``, ``output_tokens``) for
    ``reply = "lorem"`` and ``"json"``; ``"echo"`` replies with the last user message and
    ``answers`` maps an exact last user message to its reply (both cut at ``max_tokens``).

    ``api_key_env`` names an environment variable holding the key the deployment expects
    (unset: no auth). ``rpm`` is a requests-per-minute quota (429 with ``Retry-After`` =
    ``retry_after``, default the time one request's quota takes to free up, ``60 / rpm``).
    ``strict_model`` makes a request whose ``model`` differs from ``model`` a 404.

    ``quality`` (class → probability that an answer passes the scenario's check) and
    ``labels`` (class → the route a router model names) apply to prompts of the fleet's
    ``classes``; see ``benchmarks.fleet._quality``.
    """

    name: DeploymentName
    provider: str
    region: str
    model: str
    api: Literal["openai", "anthropic"] = "openai"
    latency: Distribution = Constant()
    per_token: Seconds = 0.0
    output_tokens: Annotated[int, msgspec.Meta(ge=0)] = 16
    reply: Literal["lorem", "echo", "json"] = "lorem"
    answers: dict[str, str] = {}
    api_key_env: str | None = None
    strict_model: bool = False
    rpm: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    retry_after: Seconds | None = None
    faults: Faults = Faults()
    quality: dict[str, Probability] = {}
    labels: dict[str, str] = {}

    @property
    def base_path(self) -> str:
        """The URL path prefix of this deployment's API: ``/NAME/v1``."""
        return f"/{self.name}/v1"

    @property
    def drifted_model(self) -> str:
        """The model id reported under the ``wrong_model`` fault."""
        return self.faults.drift_model or f"{self.model}-drifted"

    @property
    def quota_retry_after(self) -> float:
        """Seconds sent in ``Retry-After`` when the ``rpm`` quota is used up."""
        if self.retry_after is not None:
            return self.retry_after
        return 60.0 / self.rpm if self.rpm else 1.0


# --------------------------------------------------------------------------- scheduled events


class _Event(_Base, tag_field="kind", frozen=True, kw_only=True):
    """Common fields of a scheduled event.

    Active from ``start`` to ``end`` seconds after the fleet started (or was last reset).
    It applies to the named ``deployments``, or to every deployment in ``region``, or to
    all deployments when neither is given.
    """

    start: Seconds = 0.0
    end: Seconds = math.inf
    deployments: tuple[str, ...] | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"event end ({self.end}) must be after start ({self.start})")
        if self.deployments is not None and self.region is not None:
            raise ValueError("give either `deployments` or `region`, not both")

    def applies_to(self, deployment: Deployment) -> bool:
        """Whether this event targets ``deployment``."""
        if self.deployments is not None:
            return deployment.name in self.deployments
        if self.region is not None:
            return deployment.region == self.region
        return True

    def active_at(self, t: float) -> bool:
        """Whether the event is in force ``t`` seconds after the fleet's clock started."""
        return self.start <= t < self.end


class Brownout(_Event, tag="brownout", frozen=True, kw_only=True):
    """Multiply latency (time to first token and per token) by ``factor``."""

    factor: Annotated[float, msgspec.Meta(gt=0.0)] = 5.0


class Outage(_Event, tag="outage", frozen=True, kw_only=True):
    """Fail every request: ``mode = "error"`` answers ``status`` (503), ``"reset"`` aborts the connection."""

    mode: Literal["error", "reset"] = "error"
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 503


class RateLimit(_Event, tag="rate_limit", frozen=True, kw_only=True):
    """Answer 429 with ``Retry-After: retry_after`` to every request."""

    retry_after: Seconds = 1.0


#: A scheduled event, tagged by ``kind``.
Event: TypeAlias = Brownout | Outage | RateLimit


# --------------------------------------------------------------------------- the fleet


class FleetConfig(_Base, frozen=True, kw_only=True):
    """The whole fleet: deployments, scheduled events and the seed of every random draw.

    ``classes`` (class → its exact prompts) is what the deployments' ``quality`` and
    ``labels`` are keyed by.
    """

    deployments: Annotated[tuple[Deployment, ...], msgspec.Meta(min_length=1)]
    events: tuple[Event, ...] = ()
    seed: int = 0
    classes: dict[str, tuple[str, ...]] = {}

    def __post_init__(self) -> None:
        names: set[str] = set()
        for d in self.deployments:
            if d.name in names:
                raise ValueError(f"duplicate deployment name {d.name!r}")
            names.add(d.name)
            for field in ("quality", "labels"):
                unknown = sorted(set(getattr(d, field)) - set(self.classes))
                if unknown:
                    raise ValueError(
                        f"deployment {d.name!r}: {field} names class(es) {unknown} that are not in `classes` "
                        f"(has {sorted(self.classes)})"
                    )
        regions = {d.region for d in self.deployments}
        for i, ev in enumerate(self.events):
            for name in ev.deployments or ():
                if name not in names:
                    raise ValueError(f"events[{i}] names unknown deployment {name!r}")
            if ev.region is not None and ev.region not in regions:
                raise ValueError(f"events[{i}] names region {ev.region!r}, where no deployment is")

    # -- access

    def deployment(self, name: str) -> Deployment:
        """The deployment called ``name`` (``KeyError`` if there is none)."""
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(name)

    def with_seed(self, seed: int) -> FleetConfig:
        """A copy with another seed."""
        return msgspec.structs.replace(self, seed=seed)

    # -- loading

    @classmethod
    def loads(cls, text: str | bytes, *, source: str = "<string>") -> FleetConfig:
        """Parse and validate TOML text; errors name ``source`` and the key path."""
        try:
            return msgspec.toml.decode(text, type=cls)
        except msgspec.ValidationError as e:
            raise _config_error(e, source) from None
        except msgspec.DecodeError as e:
            raise FleetConfigError(f"invalid TOML: {e}", source=source) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FleetConfig:
        """Load and validate a TOML file; errors name the file and the key path."""
        p = Path(path)
        return cls.loads(p.read_bytes(), source=str(path))

    @classmethod
    def default(cls) -> FleetConfig:
        """The example fleet shipped as ``benchmarks/fleet/default.toml`` (used by ``specexec demo``)."""
        return cls.load(DEFAULT_CONFIG_PATH)

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any], *, source: str = "<config>") -> FleetConfig:
        """Validate plain data (dicts, lists, numbers, strings) into a config."""
        try:
            return msgspec.convert(data, type=cls)
        except msgspec.ValidationError as e:
            raise _config_error(e, source) from None

    def validated(self, *, source: str = "<config>") -> FleetConfig:
        """Run every check that loading a file runs (types and bounds), returning the config.

        ``__init__`` of a msgspec Struct does not check types or ``Meta`` bounds, so a config
        built in Python is checked by this round trip before a fleet serves it.
        """
        return FleetConfig.from_builtins(msgspec.to_builtins(self), source=source)

    # -- saving

    def to_toml(self) -> str:
        """This config as TOML text that :meth:`loads` reads back to an equal config."""
        return _to_toml(msgspec.to_builtins(self))

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write this config to ``path`` as TOML."""
        Path(path).write_text(self.to_toml(), encoding="utf-8")


_AT = re.compile(r"^(?P<detail>.*) - at `(?P<path>\$[^`]*)`$", re.DOTALL)


def _config_error(e: msgspec.ValidationError, source: str) -> FleetConfigError:
    m = _AT.match(str(e))
    if m is None:
        return FleetConfigError(str(e), source=source)
    from specexec._toml import with_allowed_values  # only on an error: the fleet's start stays light

    return FleetConfigError(with_allowed_values(m["detail"], m["path"], FleetConfig), source=source, path=m["path"])


# --------------------------------------------------------------------------- a small TOML writer
# msgspec.toml.encode needs the optional ``tomli_w`` package; the configs are plain data, so
# this writes them with every nested table inline (valid TOML 1.0, read back by tomllib).


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def _toml_str(s: str) -> str:
    # JSON string escapes are TOML basic-string escapes, except that TOML wants DEL escaped.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, Mapping):
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None)
        return "{" + items + "}"
    if isinstance(v, Sequence):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _to_toml(data: Mapping[str, Any]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and value
            and all(isinstance(x, Mapping) for x in value)
        ):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, rows in tables:
        for row in rows:
            lines.append("")
            lines.append(f"[[{_toml_key(key)}]]")
            lines.extend(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in row.items() if x is not None)
    return "\n".join(lines) + "\n"
