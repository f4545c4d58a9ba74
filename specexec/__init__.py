"""specexec: hedged, raced and verified calls to LLMs (and any async call)."""

from ._backend import Backend as Backend
from ._backend import BackendBase as BackendBase
from ._backend import CallableBackend as CallableBackend
from ._backend import Limits as Limits
from ._errors import AuthError as AuthError
from ._errors import BackendError as BackendError
from ._errors import BadRequest as BadRequest
from ._errors import BadResponse as BadResponse
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import NoAcceptableResponse as NoAcceptableResponse
from ._errors import PolicyError as PolicyError
from ._errors import RateLimited as RateLimited
from ._errors import SpecExecError as SpecExecError
from ._errors import Timeout as Timeout
from ._errors import Unavailable as Unavailable
from ._query import Message as Message
from ._query import Query as Query
from ._query import Response as Response
from ._query import Usage as Usage

__version__ = "0.1.0"
