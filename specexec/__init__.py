"""specexec: hedged, raced and verified calls to LLMs (and any async call).

>>> specexec.configure(backends=[fast, slow])      # once, at start-up (or a config file)
>>> result = await specexec.run("2+2?", specexec.Policy.hedge(["fast", "slow"], delay="p95"))

Everything public is re-exported here; modules starting with ``_`` are private.
"""

from . import backends as backends
from . import config as config
from . import routing as routing
from . import scorers as scorers
from . import stores as stores
from . import verifiers as verifiers
from ._backend import Backend as Backend
from ._backend import BackendBase as BackendBase
from ._backend import CallableBackend as CallableBackend
from ._backend import Limits as Limits
from ._backend import worst_case_cost as worst_case_cost
from ._default import aclose as aclose
from ._default import configure as configure
from ._distributions import Component as Component
from ._distributions import Constant as Constant
from ._distributions import Distribution as Distribution
from ._distributions import LogNormal as LogNormal
from ._distributions import Mixture as Mixture
from ._distributions import Scaled as Scaled
from ._distributions import Uniform as Uniform
from ._distributions import slow_tail as slow_tail
from ._engine import Result as Result
from ._errors import AuthError as AuthError
from ._errors import BackendError as BackendError
from ._errors import BadRequest as BadRequest
from ._errors import BadResponse as BadResponse
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import ContextWindowExceeded as ContextWindowExceeded
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import NoAcceptableResponse as NoAcceptableResponse
from ._errors import PolicyError as PolicyError
from ._errors import RateLimited as RateLimited
from ._errors import RuntimeClosed as RuntimeClosed
from ._errors import SpecExecError as SpecExecError
from ._errors import Timeout as Timeout
from ._errors import Unavailable as Unavailable
from ._feed import HealthFeed as HealthFeed
from ._feed import RemoteBudget as RemoteBudget
from ._feed import RemoteEval as RemoteEval
from ._feed import RemoteEvalResult as RemoteEvalResult
from ._feed import RemoteHealth as RemoteHealth
from ._health import BreakerConfig as BreakerConfig
from ._health import HealthConfig as HealthConfig
from ._policy import HedgeBudgetConfig as HedgeBudgetConfig
from ._policy import Policy as Policy
from ._query import Function as Function
from ._query import ImagePart as ImagePart
from ._query import ImageURL as ImageURL
from ._query import Message as Message
from ._query import Query as Query
from ._query import Response as Response
from ._query import StreamChunk as StreamChunk
from ._query import TextPart as TextPart
from ._query import Tool as Tool
from ._query import ToolCall as ToolCall
from ._query import Usage as Usage
from ._runtime import HealthFeedLike as HealthFeedLike
from ._runtime import Runtime as Runtime
from ._runtime import default_runtime as default_runtime
from ._runtime import run as run
from ._runtime import stream as stream
from ._runtime import warm_up as warm_up
from ._simulated import SimulatedBackend as SimulatedBackend
from ._simulated import Slowdown as Slowdown
from ._stream import Stream as Stream
from ._trace import AttemptRecord as AttemptRecord
from ._trace import JsonLinesSink as JsonLinesSink
from ._trace import LoggingSink as LoggingSink
from ._trace import RouteDecision as RouteDecision
from ._trace import Trace as Trace
from ._trace import TraceEvent as TraceEvent
from .routing import Budget as Budget
from .routing import Router as Router
from .verifiers import Verdict as Verdict

__version__ = "0.1.0"
