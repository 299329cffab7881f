"""Faults that cost one case: a case that never returns, a process that dies in a case, a results folder it cannot
write.

* A "started" record before each test: a started test with no outcome after it is the one that crashed or hung its
  process (the runner records it as failed with the signal and resumes the group after it).
* `--bn-case-timeout SECONDS` (env BNSUITE_CASE_TIMEOUT, default 300, 0: none) bounds a test's call; its set-up and
  tear-down, where a module's shared fixtures run (a whole inner pytest run, a worker's start), get SETUP_FACTOR
  times as long. Past it, SIGALRM fails the case with its id and the run goes on. A case stuck in native code that
  never returns to the interpreter cannot be interrupted that way: past the timeout and a grace, a watchdog thread
  records the case as failed, says which one on stderr, dumps every thread's stack and ends the process with exit
  EXIT_HUNG, so that the runner resumes the group after it.
* `--bn-resume` deselects the tests the results file already has an outcome for, and the run's own records
  (environment, declarations, findings) are not written again: the runner resumes a group after a crash with it.
* A default results file (no --results) that cannot be written is one usage-error line once bnsuite cases are
  collected, not an internal error in the middle of the run.

pytest-timeout was measured for this and not used: its signal method cannot end a case hung in native code (the
group hangs), and its thread method ends the whole process at the first hung case, with nobody to resume it under
plain pytest. This module does the first and then the second, and writes the outcome before it ends the process.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import time

import pytest

from bnsuite.console import EXIT_HUNG  # as timeout(1): the process ended itself because a case hung in native code

TIMEOUT_ENV = "BNSUITE_CASE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
SETUP_FACTOR = 3  # set-up and tear-down: 900 s by default, the longest bound the meta tests give an inner run


def grace_s(timeout: float) -> float:
    """How long past the timeout a case that ignores SIGALRM may take before the process is ended: a fifth of the
    timeout, at least 2 s (a native call returning just late is not a hang), at most 60 s."""
    return max(2.0, min(60.0, timeout / 5))


def pytest_addoption(parser):
    g = parser.getgroup("bnsuite", "BatchNorm conformance suite")
    g.addoption("--bn-case-timeout", default=None, metavar="SECONDS",
                help=f"fail a test whose call takes longer (its set-up and tear-down: {SETUP_FACTOR} times as "
                     f"long; env {TIMEOUT_ENV}; default {DEFAULT_TIMEOUT_S:g}; 0: no limit). The run goes on; a test "
                     f"stuck in native code ends the process after a grace (exit {EXIT_HUNG}), and the runner "
                     f"resumes its group after it.")
    g.addoption("--bn-resume", action="store_true", default=False,
                help="skip the tests the results file (--results) already has an outcome for, and do not write the "
                     "run's environment, declarations and findings again (the runner resumes a group with it)")


def case_timeout(config) -> float:
    raw = config.getoption("--bn-case-timeout")
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S)) if raw is None else raw
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise pytest.UsageError(f"--bn-case-timeout / {TIMEOUT_ENV}: expected a number of seconds >= 0 (0: no "
                                f"limit), got {raw!r}")
    return seconds


def measured(path: str | None) -> set[str]:
    """The tests the results file at `path` has an outcome for (unreadable lines are left to the report)."""
    done: set[str] = set()
    try:
        with open(path or "", "rb") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("kind") == "outcome" and isinstance(rec.get("test"), str):
                    done.add(rec["test"])
    except OSError:
        pass
    return done


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config._bn_case_timeout = case_timeout(config)
    config._bn_resume = config.getoption("--bn-resume")
    config._bn_watchdog = Watchdog(config) if config._bn_case_timeout else None


def pytest_collection_modifyitems(config, items):
    if not config._bn_resume:
        return
    done = measured(getattr(config._bn_writer, "path", None))
    if not done:
        return
    keep = [i for i in items if i.nodeid not in done]
    config.hook.pytest_deselected(items=[i for i in items if i.nodeid in done])
    items[:] = keep


def _is_case(item) -> bool:
    return "case" in getattr(getattr(item, "callspec", None), "params", {})


def pytest_collection_finish(session):
    """The default results file is opened once a bnsuite case is collected: a folder it cannot write is one line."""
    w = getattr(session.config, "_bn_writer", None)
    if w is None or getattr(w, "opened", True) or not any(_is_case(i) for i in session.items):
        return
    try:
        w.open()
    except OSError as e:
        raise pytest.UsageError(f"cannot write the results file {w.path!r}: {e.strerror or e} (choose another with "
                                f"--results=PATH, or --results=none)") from None


def _writer(item):
    """The results writer, where this test's records go (a default file records only bnsuite cases)."""
    w = getattr(item.config, "_bn_writer", None)
    return w if w is not None and (getattr(w, "opened", True) or _is_case(item)) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    w = _writer(item)
    if w is not None:
        case = item.callspec.params.get("case") if _is_case(item) else None
        adapter = getattr(getattr(case, "adapter", None), "id", "")
        w.write("started", test=item.nodeid, t=round(time.time(), 3), **({"adapter": adapter} if adapter else {}))
    return (yield)


def _bounded(item, phase: str):
    """Run one phase of a test under the case timeout: SIGALRM in the main thread, the watchdog behind it."""
    seconds = item.config._bn_case_timeout * (1 if phase == "call" else SETUP_FACTOR)
    if not seconds:
        return (yield)
    dog = item.config._bn_watchdog
    alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    old = None
    if alarm:
        def fire(signum, frame):
            pytest.fail(f"{item.nodeid}: no return from its {phase} within {seconds:g} s (--bn-case-timeout); "
                        f"the case failed alone and the run went on", pytrace=False)

        old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    dog.arm(item, phase, seconds)
    try:
        return (yield)
    finally:
        dog.disarm()
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _bounded(item, "set-up"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _bounded(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _bounded(item, "tear-down"))


class Watchdog:
    """One daemon thread that ends the process when a phase outlives its timeout plus grace_s: the case is stuck
    where SIGALRM cannot reach it (native code). It records the case as failed first, so the results say which."""

    def __init__(self, config):
        self.config = config
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._armed: tuple | None = None  # (deadline, item, phase, seconds)
        threading.Thread(target=self._watch, name="bnsuite-case-watchdog", daemon=True).start()

    def arm(self, item, phase: str, seconds: float) -> None:
        with self._lock:
            self._armed = (time.monotonic() + seconds + grace_s(seconds), item, phase, seconds)
        self._wake.set()

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def _watch(self) -> None:
        while True:
            with self._lock:
                armed = self._armed
            if armed is None:
                self._wake.wait()
                self._wake.clear()
                continue
            left = armed[0] - time.monotonic()
            if left > 0:
                self._wake.wait(min(left, 1.0))
                self._wake.clear()
                continue
            with self._lock:
                if self._armed is armed:
                    self._end(*armed[1:])

    def _end(self, item, phase: str, seconds: float) -> None:
        waited = seconds + grace_s(seconds)
        reason = (f"hung: no return from its {phase} within {seconds:g} s (--bn-case-timeout), and not interruptible "
                  f"(native code); the process was ended after {waited:g} s so that its group resumes after it")
        w = _writer(item)
        try:
            if w is not None:
                case = item.callspec.params.get("case") if _is_case(item) else None
                w.write("outcome", test=item.nodeid, outcome="failed", reason=reason,
                        adapter=getattr(getattr(case, "adapter", None), "id", ""),
                        device=getattr(case, "device", ""), dtype=getattr(case, "dtype", ""))
        finally:
            capman = item.config.pluginmanager.getplugin("capturemanager")
            try:  # the message and the stacks go to the real stderr, not to the case's captured output
                capman.suspend_global_capture(in_=True)
            except Exception:
                pass
            sys.stderr.write(f"\nbnsuite: {item.nodeid}: {reason}\n")
            sys.stderr.flush()
            faulthandler.dump_traceback(all_threads=True)
            os._exit(EXIT_HUNG)
