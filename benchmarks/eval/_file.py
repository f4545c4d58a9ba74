"""The eval file (TOML) and its datasets (JSONL): shapes and loading with path-precise errors.

.. code-block:: toml

    [eval]
    name = "starter"
    seed = 1
    router = "router.toml"          # optional: the router whose routes --write-routes rewrites

    [[backends]]                    # the candidates: specexec.config entries (or --target CONFIG)
    kind = "simulated"
    name = "mini"
    input_price = 0.15
    output_price = 0.60

    [classes.arithmetic]            # one task class
    dataset = "arithmetic.jsonl"    # next to this file: {"prompt" | "messages", "reference"?, "check"?}
    scorer = { kind = "numeric", tolerance = 1e-6 }
    min_pass_rate = 0.9             # the bar, written before any number is seen
    max_p95_latency = 2.0           # seconds (optional)
    max_cost_per_case = 0.001       # USD (optional)
    route = "math"                  # the router's route for this class (default: the class name)
    candidates = ["mini", "mid"]    # default: every backend

    [quality.mini]                  # --sim only: the share of each class's cases a backend passes
    arithmetic = 0.9

Errors are ``PolicyError`` naming the file and the key path (``$.classes.arithmetic.min_pass_rate``)
or the dataset file and line (``arithmetic.jsonl:3``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

import msgspec

from specexec import Message, PolicyError, Query
from specexec.config import BackendConfig, decode_toml, keyed_table_error, validation_error
from specexec.verifiers import VerifierSpec

__all__ = [
    "Case",
    "EvalFile",
    "EvalSpec",
    "Exact",
    "Judge",
    "Normalised",
    "Numeric",
    "RegexMatch",
    "ScorerSpec",
    "TaskClass",
    "VerifierScorer",
    "last_number",
    "load_eval",
]


class _Scorer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    pass


class Exact(_Scorer, tag="exact", frozen=True):
    """The answer equals ``reference`` (surrounding whitespace ignored)."""


class Normalised(_Scorer, tag="normalised", frozen=True):
    """Equal after case folding, dropping surrounding punctuation and collapsing whitespace."""


class Numeric(_Scorer, tag="numeric", frozen=True):
    """The last number in the answer is within ``tolerance`` (absolute) or ``relative`` of the reference."""

    tolerance: float = 1e-9
    relative: float = 0.0

    def __post_init__(self) -> None:
        for field in ("tolerance", "relative"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PolicyError(f"{field} must be a finite number >= 0, got {value!r}", path=f"$.{field}")


class RegexMatch(_Scorer, tag="regex", frozen=True):
    """The answer matches ``pattern`` (default: the case's reference, as a regex), searched."""

    pattern: str | None = None
    fullmatch: bool = False

    def __post_init__(self) -> None:
        if self.pattern is not None:
            import re

            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise PolicyError(f"pattern is not a valid regex: {exc}", path="$.pattern") from None


class VerifierScorer(_Scorer, tag="verifier", frozen=True):
    """Every verifier in ``verify`` (specexec.verifiers built-ins) accepts the answer."""

    verify: tuple[VerifierSpec, ...]

    def __post_init__(self) -> None:
        if not self.verify:
            raise PolicyError('verify needs at least one verifier, e.g. [{kind = "json_valid"}]', path="$.verify")


class Judge(_Scorer, tag="llm_judge", frozen=True):
    """``backend`` rates the answer 0–10 against ``rubric`` (and the reference, if any); it passes
    at ``min_score`` (0–1) or above. The judge's calls count in the cost of the case."""

    backend: str
    rubric: str = ""
    min_score: float = 0.7
    max_tokens: int = 8

    def __post_init__(self) -> None:
        if not self.backend:
            raise PolicyError("backend must name the judge's backend", path="$.backend")
        if not isinstance(self.min_score, (int, float)) or not 0.0 <= self.min_score <= 1.0:
            raise PolicyError(f"min_score must be between 0 and 1, got {self.min_score!r}", path="$.min_score")
        if self.max_tokens < 1:
            raise PolicyError(f"max_tokens must be >= 1, got {self.max_tokens}", path="$.max_tokens")


ScorerSpec = Exact | Normalised | Numeric | RegexMatch | VerifierScorer | Judge
"""How a case's answer is scored (tagged on ``kind``)."""

SCORER_KINDS = "exact, normalised, numeric, regex, verifier, llm_judge"
"""The scorer kinds, as an error lists them."""


def _fraction(value: float | None, path: str, *, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise PolicyError(f"{name} must be a share between 0 and 1, got {value!r}", path=path)


def _positive(value: float | None, path: str, *, unit: str) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise PolicyError(f"must be a finite number >= 0 ({unit}), got {value!r}", path=path)


class TaskClass(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One task class: its dataset, scorer, bar and route."""

    dataset: str
    min_pass_rate: float
    scorer: ScorerSpec = Exact()
    max_p95_latency: float | None = None
    max_cost_per_case: float | None = None
    route: str | None = None
    candidates: tuple[str, ...] = ()
    max_tokens: int = 256
    system: str | None = None

    def __post_init__(self) -> None:
        _fraction(self.min_pass_rate, "$.min_pass_rate", name="min_pass_rate")
        _positive(self.max_p95_latency, "$.max_p95_latency", unit="seconds")
        _positive(self.max_cost_per_case, "$.max_cost_per_case", unit="USD per case")
        if self.max_tokens < 1:
            raise PolicyError(f"max_tokens must be >= 1, got {self.max_tokens}", path="$.max_tokens")


class EvalSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[eval]``: the run's name, seed, default concurrency and the router to rewrite."""

    name: str = "eval"
    seed: int = 0
    jobs: int = 8
    router: str | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise PolicyError(f"jobs must be >= 1, got {self.jobs}", path="$.jobs")


class EvalFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The TOML shape of an eval file."""

    classes: dict[str, TaskClass]
    eval: EvalSection = EvalSection()
    backends: tuple[BackendConfig, ...] = ()
    quality: dict[str, dict[str, float]] = {}


class _CaseLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str | None = None
    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    reference: str | None = None
    check: ScorerSpec | None = None


class Case(msgspec.Struct, frozen=True):
    """One eval case: its query, reference, scorer (the case's ``check`` or the class's) and
    ``prompt_hash`` (what the cache keys on)."""

    id: str
    cls: str
    query: Query
    reference: str | None
    scorer: ScorerSpec
    prompt_hash: str


class EvalSpec(msgspec.Struct, frozen=True):
    """A loaded eval: the file, its cases per class, and where it came from."""

    file: EvalFile
    cases: dict[str, tuple[Case, ...]]
    source: str
    root: Path

    @property
    def name(self) -> str:
        """The eval's name."""
        return self.file.eval.name

    def candidates(self, cls: str) -> tuple[str, ...]:
        """The backends evaluated on ``cls``."""
        return self.file.classes[cls].candidates or tuple(b.name for b in self.file.backends)

    def route(self, cls: str) -> str:
        """The route ``cls`` maps to."""
        return self.file.classes[cls].route or cls

    def judges(self, cls: str) -> set[str]:
        """The backends whose ``llm_judge`` scores ``cls``'s cases (its scorer's and the cases' own checks)."""
        return {c.scorer.backend for c in self.cases[cls] if isinstance(c.scorer, Judge)}


def _hash(*parts: object) -> str:
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:24]


def _load_cases(name: str, cls: TaskClass, root: Path, source: str) -> tuple[Case, ...]:
    path = root / cls.dataset
    where = f"$.classes.{name}.dataset"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PolicyError(f"cannot read dataset {str(path)!r}: {exc.strerror}", path=where, source=source) from None
    out: list[Case] = []
    seen: set[str] = set()
    decoder = msgspec.json.Decoder(_CaseLine)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        origin = f"{path}:{number}"
        try:
            raw = decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, origin, _CaseLine) from None
        except msgspec.DecodeError as exc:
            raise PolicyError(f"not a JSON object: {exc}", source=origin) from None
        if (raw.prompt is None) == (not raw.messages):
            raise PolicyError('give exactly one of "prompt" or "messages"', source=origin)
        scorer = raw.check or cls.scorer
        if isinstance(scorer, (Exact, Normalised, Numeric)) and raw.reference is None:
            raise PolicyError(f'the {scorer.__struct_config__.tag} scorer needs a "reference"', source=origin)
        if isinstance(scorer, RegexMatch) and scorer.pattern is None and raw.reference is None:
            raise PolicyError('the regex scorer needs a "pattern" or a "reference" (the pattern)', source=origin)
        if isinstance(scorer, Numeric) and raw.reference is not None and last_number(raw.reference) is None:
            raise PolicyError(f"reference {raw.reference!r} is not a number", path="$.reference", source=origin)
        case_id = raw.id or f"{name}-{number}"
        if case_id in seen:
            raise PolicyError(f"two cases have the id {case_id!r}", path="$.id", source=origin)
        seen.add(case_id)
        messages = raw.messages
        if cls.system is not None:
            messages = (Message("system", cls.system), *(messages or (Message("user", raw.prompt or ""),)))
        query = Query(
            prompt=None if messages else raw.prompt,
            messages=messages,
            max_tokens=cls.max_tokens,
            temperature=0.0,
            # seed_key: a simulated backend draws this case's latency from its own stream, so
            # --sim is deterministic whatever order the concurrent calls run in
            metadata={"task_class": name, "eval_case": case_id, "seed_key": f"{name}/{case_id}"},
        )
        prompt_hash = _hash(raw.prompt, msgspec.to_builtins(messages), cls.max_tokens)
        out.append(Case(case_id, name, query, raw.reference, scorer, prompt_hash))
    if not out:
        raise PolicyError(f"dataset {str(path)!r} has no cases", path=where, source=source)
    return tuple(out)


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (thousands separators ignored), or ``None``."""
    import re

    found = re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text.replace(",", ""))
    if not found:
        return None
    return float(found[-1])


def load_eval(path: str | Path) -> EvalSpec:
    """Load and check an eval file and its datasets (``PolicyError`` with file and key path)."""
    source = Path(path)
    origin = str(source)
    _check_class_tables(source)
    file = decode_toml(source, EvalFile, sections=True)
    if not file.classes:
        raise PolicyError("an eval needs at least one [classes.NAME] table", path="$.classes", source=origin)
    names = {b.name for b in file.backends}
    seen: set[str] = set()
    for i, b in enumerate(file.backends):
        if b.name in seen:
            raise PolicyError(f"two backends are named {b.name!r}", path=f"$.backends[{i}].name", source=origin)
        seen.add(b.name)
    for key, cls in file.classes.items():
        for i, c in enumerate(cls.candidates):
            if names and c not in names:
                raise PolicyError(
                    f"candidate {c!r} is not a backend of this file (it has: {', '.join(sorted(names))})",
                    path=f"$.classes.{key}.candidates[{i}]",
                    source=origin,
                )
        if isinstance(cls.scorer, Judge) and names and cls.scorer.backend not in names:
            raise PolicyError(
                f"judge backend {cls.scorer.backend!r} is not a backend of this file",
                path=f"$.classes.{key}.scorer.backend",
                source=origin,
            )
    for backend, per_class in file.quality.items():
        if names and backend not in names:
            raise PolicyError(f"{backend!r} is not a backend of this file", path=f"$.quality.{backend}", source=origin)
        for key, p in per_class.items():
            if key not in file.classes:
                raise PolicyError(
                    f"{key!r} is not a task class (classes: {', '.join(file.classes)})",
                    path=f"$.quality.{backend}.{key}",
                    source=origin,
                )
            _fraction_at(p, f"$.quality.{backend}.{key}", origin)
    cases = {key: _load_cases(key, cls, source.parent, origin) for key, cls in file.classes.items()}
    return EvalSpec(file, cases, origin, source.parent)


def _check_class_tables(source: Path) -> None:
    """Validate each ``[classes.NAME]`` on its own first: msgspec's paths say ``[...]`` for a
    table key, and the error must name the class."""
    error = keyed_table_error(source, ("classes",), TaskClass)
    if error is None:
        return
    message = str(error).removeprefix(f"{error.source}: ").removesuffix(f" (at {error.path})")
    if error.path.endswith(".scorer.kind"):
        message += f"; scorer kinds: {SCORER_KINDS}"
    raise PolicyError(message, path=error.path, source=error.source)


def _fraction_at(p: object, path: str, origin: str) -> None:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise PolicyError(f"a pass probability must be between 0 and 1, got {p!r}", path=path, source=origin)


Mode = Literal["sim", "target", "live"]
