"""``python -m specexec.bench.fleet``: run the loopback mock provider fleet."""

import sys

from ._run import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m specexec.bench.fleet"))
