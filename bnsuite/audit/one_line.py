"""The model tools' command lines (python -m bnsuite.audit, .diff, .probe; python3 -m bnsuite audit, diff): bad input
is one line `<tool>: error: ...` on stderr and exit 2, whether argparse or the tool found it."""

from __future__ import annotations

import argparse
import sys


def error(tool: str, message) -> int:
    """Write `tool: error: message` on stderr; the exit status for bad input (2)."""
    sys.stderr.write(f"{tool}: error: {message}\n")
    return 2


def print_report(tool: str, make_report, errors: tuple[type[Exception], ...], as_json: bool, verdict) -> int:
    """The exit status of a command that prints one report: 2 with one line where make_report() raises one of
    `errors`, else the report printed (its to_json() where `as_json`) and verdict(report)."""
    try:
        report = make_report()
    except errors as e:
        return error(tool, e)
    print(report.to_json() if as_json else report)
    return verdict(report)


class ToolParser(argparse.ArgumentParser):
    """argparse for `python -m bnsuite.<tool>` with its errors as one line (argparse prints usage too)."""

    def __init__(self, tool: str, prog: str | None = None, **kwargs):
        super().__init__(prog=prog or f"python -m bnsuite.{tool}", **kwargs)
        self.tool = tool

    def error(self, message):
        sys.exit(error(self.tool, message))
