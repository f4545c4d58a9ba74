"""``python -m specexec.bench.tail_at_scale``: the tail-at-scale benchmark (see ``benchmarks/bench/_tail.py``).

Runs the ``tail-at-scale`` scenario in virtual time with a sweep of fixed hedge delays, checks
the targets (adaptive p95: p99 ≥ 65 % and p99.9 ≥ 60 % below a single backend at ≤ 6 % extra
load, p99 within 10 % of the best fixed delay in hindsight), then repeats it with every
backend browned out ×5 for a minute. ``--seeds N``: the adaptive policies on N seeds against
the fixed-delay limit at equal extra load; ``--live``: over loopback HTTP, each figure next to
that limit. Figures measured on the project's machines are in
``benchmarks/bench/RESULTS.md``.
"""

import sys

from specexec.bench.bench._tail import main

if __name__ == "__main__":
    sys.exit(main())
