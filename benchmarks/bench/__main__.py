"""``python -m specexec.bench.bench`` — the same as ``specexec bench``."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
