"""``python -m specexec.probes --config probes.toml``: run the probe daemon."""

import sys

from ._cli import main

sys.exit(main())
