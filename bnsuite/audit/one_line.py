"""The model tools' command lines (python -m bnsuite.audit, .diff, .probe): bad input is one line
`<tool>: error: ...` on stderr and exit 2, whether argparse or the tool found it."""

from __future__ import annotations

import argparse
import sys


def error(tool: str, message) -> int:
    """Write `tool: error: message` on stderr; the exit status for bad input (2)."""
    sys.stderr.write(f"{tool}: error: {message}\n")
    return 2


class ToolParser(argparse.ArgumentParser):
    """argparse for `python -m bnsuite.<tool>` with its errors as one line (argparse prints usage too)."""

    def __init__(self, tool: str, **kwargs):
        super().__init__(prog=f"python -m bnsuite.{tool}", **kwargs)
        self.tool = tool

    def error(self, message):
        sys.exit(error(self.tool, message))
