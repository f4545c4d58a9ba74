"""``python -m specexec``: the same command as ``specexec`` (demo, bench, eval, fleet, probe)."""

from ._cli import main

raise SystemExit(main())
