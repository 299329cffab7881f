"""Terminal summaries that suites contribute (the freeze matrix, batch-size deviations, ...).

A suite registers a function ``(terminalreporter, config) -> None`` with ``register``, or a titled section with one
line per row of its own list with ``register_rows``; the pytest plugin prints every registered summary after the run.
Suites import this module, never the plugin or conftest.
"""

from __future__ import annotations

from typing import Callable

SUMMARY_HOOKS: list[Callable] = []


def register(fn: Callable) -> Callable:
    """Add a terminal summary; usable as a decorator."""
    if fn not in SUMMARY_HOOKS:
        SUMMARY_HOOKS.append(fn)
    return fn


def register_rows(title: str, rows: list, line: Callable[[dict], str]) -> None:
    """Add a summary printing section `title` with `line(row)` for each of `rows` (a suite's module-level list, filled
    as its tests run); nothing where the run added no row."""

    def summary(terminalreporter, config) -> None:
        if not rows:
            return
        terminalreporter.section(title)
        for row in rows:
            terminalreporter.write_line(line(row))

    register(summary)
