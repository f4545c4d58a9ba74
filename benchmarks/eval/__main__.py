"""``python -m benchmarks.eval``."""

import sys

from ._cli import main

sys.exit(main())
