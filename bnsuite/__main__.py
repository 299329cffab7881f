"""``python3 -m bnsuite``: the command line (see bnsuite.cli)."""

import sys

from bnsuite.cli import entry

if __name__ == "__main__":
    sys.exit(entry())
