"""Errors raised by specexec.

The hierarchy::

    SpecExecError                    base of everything specexec raises
    ├── PolicyError                  bad policy or config (path + expected + got); raised at load/build time
    ├── NoAcceptableResponse         every attempt failed or was rejected (carries each attempt's cause)
    ├── DeadlineExceeded             the run's deadline passed first (carries the partial trace)
    ├── BudgetExceeded               no candidate fits the cost ceiling (or the tenant budget)
    └── BackendError                 one attempt at one backend failed
        ├── RateLimited              429; ``retry_after`` seconds when the provider said so    (retryable)
        ├── Unavailable              5xx, 408/409, overloaded, connection refused or reset      (retryable)
        ├── Timeout                  connect/read/attempt timeout                               (retryable)
        ├── BadResponse              malformed body, missing fields, truncated stream           (retryable)
        ├── BadRequest               400/404/422: the request itself is wrong                   (fatal)
        │   └── ContextWindowExceeded  the input + max_tokens do not fit this model's window  (not fatal)
        └── AuthError                401/403: credentials missing or refused (about the backend: not fatal)

A *fatal* backend error (``error.fatal is True``) stops a run at once: another candidate
cannot help with a request that is itself wrong. Which kinds end a run is the policy's
``fatal`` (default: ``BadRequest`` but not ``ContextWindowExceeded``). An ``AuthError`` is
about one backend's credentials: that candidate fails, the backend is taken out for a long
cooldown, and the run carries on with the others. Every other backend error moves the run
on to the next candidate.

A failure after the provider began to answer (a stream cut after some tokens) carries the
tokens received in ``partial_usage``: the provider bills them, so the run is charged them.

Messages never contain secrets: backends strip API keys before building an error (see
``redact``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._query import Usage
    from ._trace import AttemptRecord, Trace


class SpecExecError(Exception):
    """Base class of every error specexec raises."""


class PolicyError(SpecExecError, ValueError):
    """A policy or config is invalid: says where (``path``), what was expected and what was got."""

    def __init__(self, message: str, *, path: str = "$", source: str | None = None) -> None:
        self.path = path
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message} (at {path})")


class NoAcceptableResponse(SpecExecError):
    """Every attempt failed or was rejected; ``attempts`` holds each one's record and cause."""

    def __init__(self, message: str, *, trace: Trace) -> None:
        self.trace = trace
        super().__init__(message)

    @property
    def attempts(self) -> list[AttemptRecord]:
        """The records of every attempt (and skipped candidate) of the run."""
        return self.trace.attempts

    @property
    def causes(self) -> list[BaseException]:
        """The exceptions that made attempts fail, in launch order (rejections carry none)."""
        return [a.error for a in self.trace.attempts if a.error is not None]


class DeadlineExceeded(SpecExecError, TimeoutError):
    """The run's deadline passed before a response was accepted; ``trace`` is the partial trace."""

    def __init__(self, message: str, *, trace: Trace) -> None:
        self.trace = trace
        super().__init__(message)


class BudgetExceeded(SpecExecError):
    """No candidate could be launched within the cost ceiling (or the tenant budget)."""

    def __init__(self, message: str, *, trace: Trace | None = None) -> None:
        self.trace = trace
        super().__init__(message)


class BackendError(SpecExecError):
    """One attempt at one backend failed.

    ``status`` is the HTTP status where there was one, ``request_id`` the provider's request
    id, ``body`` a short excerpt of the response body with secrets removed, ``retry_after``
    the seconds the provider asked to wait (a 429's or a 503/529's ``Retry-After``): the
    backend's circuit breaker stays open exactly that long (capped by
    ``HealthConfig.max_retry_after``). ``partial_usage`` holds the tokens already received
    when the failure came after the provider began to answer (they are billed).
    """

    fatal: bool = False
    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        partial_usage: Usage | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.partial_usage = partial_usage
        self.backend = backend
        self.status = status
        self.request_id = request_id
        self.body = body
        super().__init__(message)

    def __str__(self) -> str:
        """The message, then what is known of the failure in parentheses:
        ``connection refused (backend=b1, status=503, request_id=r-1, body='busy')``."""
        details = []
        if self.backend:
            details.append(f"backend={self.backend}")
        if self.status is not None:
            details.append(f"status={self.status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        if self.body:
            details.append(f"body={self.body!r}")
        message = super().__str__()
        if not details:
            return message
        return f"{message} ({', '.join(details)})" if message else ", ".join(details)


class RateLimited(BackendError):
    """The provider refused for rate (HTTP 429); ``retry_after`` is in seconds when known."""

    kind = "rate_limited"

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, retry_after=retry_after, **kw)  # type: ignore[arg-type]


class Unavailable(BackendError):
    """The backend is down or overloaded (5xx, 529, 408/409, connection refused or reset)."""

    kind = "unavailable"


class Timeout(BackendError):
    """The attempt timed out (connect, read, or the policy's ``attempt_timeout``)."""

    kind = "timeout"


class BadResponse(BackendError):
    """The backend answered, but not with a usable response (malformed, truncated, missing fields)."""

    kind = "bad_response"


class BadRequest(BackendError):
    """The request was refused as invalid (400/404/422). Fatal: another backend will not help."""

    kind = "bad_request"
    fatal = True


class ContextWindowExceeded(BadRequest):
    """The input plus ``max_tokens`` do not fit this model's context window (a 400 such as
    OpenAI's ``context_length_exceeded``). Not fatal: a model with a larger window may answer."""

    kind = "context_window"
    fatal = False


class AuthError(BackendError):
    """Credentials are missing or refused (401/403). Not fatal to the run: the key is this
    backend's, so the candidate fails and the backend is taken out (breaker reason ``auth``)."""

    kind = "auth"
    fatal = False


class RuntimeClosed(SpecExecError, RuntimeError):
    """The ``Runtime`` a run was using was exited (its HTTP clients closed) while the run was in
    flight: the run stops at once, and no backend is blamed for it. Exit the runtime after the
    runs that use it have ended (a service's lifespan does)."""


_SECRET_PATTERNS = (
    re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{6,}"),  # at a word's start: "task-classifier" is no key
    re.compile(r"((?:api[_-]?key|authorization|x-api-key|bearer)[\"']?\s*[:=]?\s*[\"']?)([^\s\"',}]{6,})", re.I),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets from ``text``: each of ``secrets`` verbatim, and anything that looks like a
    key (``sk-…`` starting a word; a value after ``api_key``, ``authorization``, ``bearer``…)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS[0].sub("[REDACTED]", text)
    return _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + "[REDACTED]", text)


MAX_ID_CHARS = 200
"""Longest provider id (request id, model id) kept from a response, after secrets are removed."""


def redact_id(value: str | None, secrets: Iterable[str] = ()) -> str | None:
    """A provider-supplied id (a request id header, a model id) fit to show: secrets removed as
    by ``redact`` and at most ``MAX_ID_CHARS`` characters; ``None`` if empty."""
    if not value:
        return None
    text = redact(value[: MAX_ID_CHARS * 4], secrets)  # a key cut at this edge is cut again below
    if len(text) > MAX_ID_CHARS:
        text = text[: MAX_ID_CHARS - 1] + "…"
    return text or None


def first_fatal(errors: Sequence[BaseException]) -> BackendError | None:
    """The first fatal backend error among ``errors``, if any."""
    for error in errors:
        if isinstance(error, BackendError) and error.fatal:
            return error
    return None
