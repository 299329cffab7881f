"""``python3 -m bnsuite``: the runner's command line (see bnsuite.runner)."""

import sys

from bnsuite.runner import entry

if __name__ == "__main__":
    sys.exit(entry())
