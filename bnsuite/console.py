"""The command line's two ways to speak: a progress line on stdout, and one error line on stderr with an exit.

Standard library only, like the runner.
"""

from __future__ import annotations

import sys

EXIT_HUNG = 124  # a pytest process ended itself because a case hung in native code (bnsuite/plugin_faults.py)


def say(msg: str) -> None:
    print(msg, flush=True)


def fail(msg: str, code: int = 2) -> "None":
    """One line `bnsuite: error: ...` on stderr, then exit `code` (2: bad input)."""
    print(f"bnsuite: error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(code)
