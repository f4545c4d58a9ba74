"""Health primitives: latency windows, circuit breaker, hedge budget, rate and concurrency limits.

All of it is synchronous and clock-injected: every method that depends on time takes
``now`` (seconds on the event loop's clock, ``anyio.current_time()``), so it runs the same
under trio and asyncio and is tested without an event loop.
"""

from ._backend_health import BackendHealth as BackendHealth
from ._backend_health import HealthConfig as HealthConfig
from ._breaker import BreakerConfig as BreakerConfig
from ._breaker import BreakerState as BreakerState
from ._breaker import CircuitBreaker as CircuitBreaker
from ._budget import FailoverThrottle as FailoverThrottle
from ._budget import HedgeBudget as HedgeBudget
from ._latency import LatencyWindow as LatencyWindow
from ._limits import ConcurrencyLimit as ConcurrencyLimit
from ._limits import RateLimiter as RateLimiter
