"""``python -m specexec.bench.eval``."""

import sys

from ._cli import main

sys.exit(main())
