"""Multi-replica cases: (adapter, idiom) parameters from each adapter's engine declaration, the one worker run per
engine that every case of that engine reads, and the declaration as a results-file record."""

from __future__ import annotations

import concurrent.futures

import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters import replicas as rp


def engine(cls) -> type[rp.ReplicaEngine]:
    """The adapter's multi-replica engine, for a test: skips where the adapter names none, fails where it is broken."""
    __tracebackhide__ = True
    return capabilities.require(cls, "replicas")


def _declaration(cls):
    """The engine's ReplicaDeclaration, or the reason there is none (a string), or the CapabilityBroken error."""
    try:
        return capabilities.load(cls, "replicas").declare()
    except capabilities.CapabilityAbsent as e:
        return str(e)
    except capabilities.CapabilityBroken as e:
        return e


def idioms_of(case) -> list:
    """The idioms joint with a case (a suite's PER_CASE): every idiom the adapter's engine declares on the case's
    device (cpu idioms under the cpu case, gpu idioms under the gpu case); one skipped "none" where the adapter has no
    engine, one "none" that fails (the case asks for the engine) where the engine it names cannot be loaded."""
    decl = _declaration(case.adapter)
    if isinstance(decl, (str, Exception)):
        skip = [pytest.mark.skip(reason=decl)] if isinstance(decl, str) else []
        return [pytest.param("none", id="none", marks=skip)] if case.device == "cpu" else []
    return [pytest.param(idiom, id=idiom) for idiom, facts in decl.idioms.items() if facts.value.device == case.device]


def replica_declaration_record(cls) -> dict | None:
    """The engine's declaration as JSON-able data for the results file (None: the adapter has no engine)."""
    decl = _declaration(cls)
    return None if isinstance(decl, (str, Exception)) else rp.declaration_record(decl)


# Workers started ahead of their cases (prefetch), one at a time in a background thread: an engine's start-up
# (torch.distributed, several JAX host devices, TensorFlow logical devices) then overlaps the other suites.
_AHEAD = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnsuite-replicas")
_STARTED: dict[str, concurrent.futures.Future] = {}


def prefetch(refs: list[str]) -> None:
    """Start the workers of these engines ("module:Engine") in the background, in order."""
    for ref in refs:
        if ref not in _STARTED:
            _STARTED[ref] = _AHEAD.submit(rp.run_worker, ref)


class Runs:
    """One worker run per engine, shared by every case that reads it (module-scoped in the suite)."""

    def __init__(self):
        self._done: dict[str, rp.Results] = {}

    def get(self, cls) -> rp.Results:
        ref = capabilities.named(cls)["replicas"]
        if ref not in self._done:
            ahead = _STARTED.pop(ref, None)
            self._done[ref] = ahead.result() if ahead is not None else rp.run_worker(ref)
        return self._done[ref]
