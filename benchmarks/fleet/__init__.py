"""The loopback mock provider fleet: OpenAI- and Anthropic-compatible deployments on one HTTP/1.1 port.

Each *deployment* (name, provider, region, model, API style) is served under ``/NAME/v1``
with a seeded latency model, fault injection, an ``rpm`` quota and scheduled events
(brownouts, outages, rate limits). ``GET /stats``, ``POST /reset`` and ``GET /healthz``
observe and control the fleet. It runs on asyncio (uvloop) with h11; tests of the
trio-based library use it through :func:`start_fleet_process` (a subprocess)::

    with start_fleet_process(FleetConfig.default(), seed=1) as fleet:
        client = openai.OpenAI(base_url=fleet.base_url("alpha-us"), api_key="x")

In an asyncio program, ``async with Fleet(config) as fleet:`` serves it in-process.

``/stats`` shape::

    {"seed": 0, "clock": 12.5, "uptime": 40.1, "in_flight": 0,
     "deployments": {"alpha-us": {"provider": "alpha", "region": "us-east", "api": "openai",
                                  "model": "...", "requests": 10, "completed": 8,
                                  "disconnected": 1, "in_flight": 0,
                                  "by_status": {"200": 7, "503": 1},
                                  "faults": {"error_503": 1, "reset": 1},
                                  "events": {"brownout": 3}, "quota_limited": 0,
                                  "tokens_sent": 96}},
     "unrouted": {"requests": 1, "by_status": {"404": 1}}}

``requests`` = ``completed`` + ``disconnected`` + aborted (``reset`` faults and outages in
reset mode) + ``in_flight``; ``completed`` counts every response sent whole, errors
included; ``by_status`` counts the status of every response whose head was sent;
``disconnected`` counts requests whose client went away (or that shutdown cancelled)
before the response was whole; ``tokens_sent`` counts the output tokens handed to the
transport (a whole body's at once, a stream's one by one, so a client that leaves mid-stream
stops it: the server stopped generating). ``POST /reset`` zeroes the counters, reseeds every
deployment's draws (the same seed then gives the same latencies and faults again),
refills the ``rpm`` quotas and restarts the scheduled-event clock.

Answers carry ``x-fleet-clock`` (seconds on the event clock when the request arrived)
and ``x-fleet-ttft`` (the time to first token drawn, brownouts included), besides the
provider's request id header (``x-request-id`` / ``request-id``).
"""

from ._config import DEFAULT_CONFIG_PATH as DEFAULT_CONFIG_PATH
from ._config import Brownout as Brownout
from ._config import Constant as Constant
from ._config import Deployment as Deployment
from ._config import Distribution as Distribution
from ._config import Event as Event
from ._config import Faults as Faults
from ._config import FleetConfig as FleetConfig
from ._config import FleetConfigError as FleetConfigError
from ._config import LogNormal as LogNormal
from ._config import Mixture as Mixture
from ._config import Outage as Outage
from ._config import RateLimit as RateLimit
from ._config import Uniform as Uniform
from ._config import Weighted as Weighted
from ._latency import LatencyModel as LatencyModel
from ._process import FleetProcess as FleetProcess
from ._process import start_fleet_process as start_fleet_process
from ._reply import count_tokens as count_tokens
from ._run import main as main
from ._run import run_fleet as run_fleet
from ._server import Fleet as Fleet
from ._server import FleetStartError as FleetStartError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Brownout",
    "Constant",
    "Deployment",
    "Distribution",
    "Event",
    "Faults",
    "Fleet",
    "FleetConfig",
    "FleetConfigError",
    "FleetProcess",
    "FleetStartError",
    "LatencyModel",
    "LogNormal",
    "Mixture",
    "Outage",
    "RateLimit",
    "Uniform",
    "Weighted",
    "count_tokens",
    "main",
    "run_fleet",
    "start_fleet_process",
]
