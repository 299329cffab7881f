"""Terminal summaries that suites contribute (the freeze matrix, batch-size deviations, ...).

A suite registers a function ``(terminalreporter, config) -> None`` with ``register``; the pytest plugin prints every
registered summary after the run. Suites import this module, never the plugin or conftest.
"""

from __future__ import annotations

from typing import Callable

SUMMARY_HOOKS: list[Callable] = []


def register(fn: Callable) -> Callable:
    """Add a terminal summary; usable as a decorator."""
    if fn not in SUMMARY_HOOKS:
        SUMMARY_HOOKS.append(fn)
    return fn
