"""The probe daemon: keeps every service's view of upstream health current.

It sends a tiny probe (``Query("ping", max_tokens=1)``, and optionally a *canary* question
with a known answer) to each backend on a schedule, records latency and TTFT (per probe
query: the ping and the canary apart), errors by kind and the reported model id into
rotating HDR histograms, and publishes the result over HTTP
(``/healthz``, ``/v1/health``, ``/v1/snapshot``, ``/metrics``) and as an atomically written
snapshot file. With ``[eval]`` it also runs an eval file on a schedule within a daily budget
and publishes per task class and backend pass rates (``EvalRunner``), raising the drift flag
of a backend below a class's bar. Services follow it with ``specexec.HealthFeed``. See ``probes/README.md``.

Run it with ``specexec probe --config probes.toml`` or ``python -m specexec.probes --config probes.toml``,
or in-process::

    async with anyio.create_task_group() as tg:
        daemon = await tg.start(ProbeDaemon(ProbeConfig.load("probes.toml")).run)
"""

from ._budget import DailyBudget as DailyBudget
from ._cli import main as main
from ._config import BackendOverride as BackendOverride
from ._config import Canary as Canary
from ._config import EvalSettings as EvalSettings
from ._config import ProbeConfig as ProbeConfig
from ._config import ProbeSettings as ProbeSettings
from ._config import TargetSettings as TargetSettings
from ._daemon import ProbeDaemon as ProbeDaemon
from ._eval import EvalRunner as EvalRunner
from ._snapshot import SNAPSHOT_VERSION as SNAPSHOT_VERSION
from ._snapshot import BackendSnapshot as BackendSnapshot
from ._snapshot import BackendView as BackendView
from ._snapshot import BudgetView as BudgetView
from ._snapshot import EncodedHistogram as EncodedHistogram
from ._snapshot import EvalResultView as EvalResultView
from ._snapshot import EvalView as EvalView
from ._snapshot import HealthReport as HealthReport
from ._snapshot import QuerySnapshot as QuerySnapshot
from ._snapshot import QueryView as QueryView
from ._snapshot import Snapshot as Snapshot
from ._snapshot import decode_snapshot as decode_snapshot
from ._snapshot import encode_snapshot as encode_snapshot
from ._snapshot import read_snapshot_file as read_snapshot_file
from ._state import ProbeState as ProbeState

__all__ = [
    "SNAPSHOT_VERSION",
    "BackendOverride",
    "BackendSnapshot",
    "BackendView",
    "BudgetView",
    "Canary",
    "DailyBudget",
    "EncodedHistogram",
    "EvalResultView",
    "EvalRunner",
    "EvalSettings",
    "EvalView",
    "HealthReport",
    "ProbeConfig",
    "ProbeDaemon",
    "ProbeSettings",
    "ProbeState",
    "QuerySnapshot",
    "QueryView",
    "Snapshot",
    "TargetSettings",
    "decode_snapshot",
    "encode_snapshot",
    "main",
    "read_snapshot_file",
]
