"""Assertion helpers that record every measurement before they judge it.

Each failure message says the property, the declared (or oracle) value, the observed value and the adapter.
`__tracebackhide__` makes a failure point at the test, not at this module.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from bnsuite.suites import repro
from bnsuite.suites.tolerances import Tol


class Recorder:
    """Bound to one test case; writes "check" records to the results file (if any)."""

    def __init__(self, writer, *, test: str, adapter: str, device: str, dtype: str, repro: str):
        self.writer = writer
        self.base = {"test": test, "adapter": adapter, "device": device, "dtype": dtype, "repro": repro}
        self.snippet = ""
        self.layer_code = ""  # the case's seeded input and state and its layer through the adapter (repro.py)
        self.checks: list[dict] = []
        self._pending: list[str] | None = None
        self._finding_note = ""  # set by a failing record() of a property that demonstrates a finding

    @contextlib.contextmanager
    def together(self):
        """Run several checks, record all of them, then fail once with every message (so one failing property
        does not hide the next). Nested inside another such block it adds nothing: the outermost one reports."""
        __tracebackhide__ = True
        if self._pending is not None:
            yield
            return
        with self.judged_here():
            yield

    @contextlib.contextmanager
    def judged_here(self):
        """Checks inside are judged at the end of this block, even within a test-level block: for Hypothesis, which
        must see the failing example raise to report and shrink it."""
        __tracebackhide__ = True
        outer, self._pending = self._pending, []
        try:
            yield
        finally:
            local, self._pending = self._pending, outer
        if local:
            raise AssertionError("\n".join(local))

    def fail(self, msg: str) -> None:
        __tracebackhide__ = True
        note, self._finding_note = self._finding_note, ""
        if note and note not in msg:
            msg += note  # a check that stops reproducing a finding names it
        if self._pending is None:
            raise AssertionError(msg)
        self._pending.append(msg)

    def record(self, prop: str, **fields: Any) -> None:
        rec = {**self.base, "property": prop, "snippet": self.snippet, **fields}
        self._finding_note = ""
        if rec.get("passed") is False:
            rec["script"] = self.script(prop, rec.get("declared"), rec.get("observed"))
            from bnsuite import findings  # loaded (and validated) by the plugin at configure time

            self._finding_note = findings.failure_note(prop, self.base["adapter"], self.base["test"])
            if self._finding_note and rec.get("message"):
                rec["message"] = str(rec["message"]) + self._finding_note
        self.checks.append(rec)
        if self.writer is not None:
            self.writer.write("check", **rec)

    def script(self, prop: str, declared: Any, observed: Any) -> str:
        """A standalone script for a failing check (suites/repro.py): the layer called through its adapter on the
        case's seeded input and state, beside the declaration, and what was recorded."""
        b = self.base
        return repro.script(f"{prop} on {b['adapter']} ({b['device']}, {b['dtype']}): {b['test']}", self.snippet,
                            self.layer_code, declared, observed)

    def where(self) -> str:
        b = self.base
        return f"[adapter {b['adapter']}, {b['device']}, {b['dtype']}]"


@contextlib.contextmanager
def judged_together(*recs: Recorder):
    """The test-level judgement for a test that records under several adapters (one Recorder each): every check of
    every recorder is recorded, then the test fails once with all the messages."""
    __tracebackhide__ = True
    outer = [r._pending for r in recs]
    pending: list[str] = []
    for r in recs:
        r._pending = pending
    try:
        yield
    finally:
        for r, o in zip(recs, outer):
            r._pending = o
    if pending:
        raise AssertionError("\n".join(pending))


def _errors(observed: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    if observed.size == 0:
        return 0.0, 0.0
    with np.errstate(invalid="ignore"):  # inf - inf is NaN: no error to measure there
        diff = np.abs(observed - expected)
    known = ~np.isnan(diff)  # a NaN on either side is judged by the NaN check, not measured
    if not known.any():
        return float("nan"), float("nan")
    finite = known & np.isfinite(expected)  # a relative error needs a finite expected value
    rel = diff[finite] / np.maximum(np.abs(expected[finite]), np.finfo(np.float64).tiny)
    return float(diff[known].max()), float(rel.max()) if rel.size else float("nan")


def close(rec: Recorder, prop: str, observed, expected, tol: Tol, *, declared: Any = "oracle",
          source: str = "", extra: dict | None = None) -> None:
    """observed ~= expected elementwise within tol; checks shape, then NaN/inf, then values."""
    __tracebackhide__ = True
    obs = np.asarray(observed, np.float64)
    exp = np.asarray(expected, np.float64)
    fields = dict(declared=declared, source=source, atol=tol.atol, rtol=tol.rtol, tol_why=tol.why, **(extra or {}))
    if obs.shape != exp.shape:
        msg = f"{prop}: shape {obs.shape}, but the oracle has shape {exp.shape} {rec.where()}"
        rec.record(prop, observed=f"shape {obs.shape}", passed=False, message=msg, **fields)
        return rec.fail(msg)
    bad_nonfinite = ~np.isfinite(obs) & np.isfinite(exp)
    max_abs, max_rel = _errors(obs, exp)
    if bad_nonfinite.any():
        msg = (f"{prop}: {int(bad_nonfinite.sum())} non-finite values (first at {np.argwhere(bad_nonfinite)[0]}) "
               f"where the oracle is finite {rec.where()}")
        rec.record(prop, observed="non-finite", passed=False, message=msg, max_abs_err=max_abs,
                   max_rel_err=max_rel, **fields)
        return rec.fail(msg)
    ok = tol.allows(obs, exp) | (np.isnan(obs) & np.isnan(exp))
    passed = bool(ok.all())
    msg = ""
    if not passed:
        idx = tuple(np.argwhere(~ok)[0])
        msg = (f"{prop}: observed {obs[idx]:.9g} at {idx}, but {declared} gives {exp[idx]:.9g} "
               f"(max abs err {max_abs:.3g} > atol {tol.atol:.3g} + rtol {tol.rtol:.3g}*|expected|; {tol.why}) "
               f"{rec.where()}")
    rec.record(prop, observed="matches" if passed else f"max abs err {max_abs:.3g}", passed=passed, message=msg,
               max_abs_err=max_abs, max_rel_err=max_rel, **fields)
    if not passed:
        rec.fail(msg)


def equal(rec: Recorder, prop: str, declared: Any, observed: Any, *, source: str = "", extra: dict | None = None,
          max_abs_err: float | None = None) -> None:
    """A declared fact equals the observed one. A failure's message carries what explains the observation: the
    `detail` and the other `extra` fields, and the measured `max_abs_err`."""
    __tracebackhide__ = True
    passed = declared == observed
    msg = "" if passed else (f"{prop}: declared {declared!r}, observed {observed!r} {rec.where()}"
                             + _explanation(extra, max_abs_err)
                             + (f"; declared from {source}" if source else ""))
    rec.record(prop, declared=declared, observed=observed, passed=passed, message=msg, source=source,
               max_abs_err=max_abs_err, **(extra or {}))
    if not passed:
        rec.fail(msg)


def _explanation(extra: dict | None, max_abs_err: float | None) -> str:
    """"; detail; key=value, ...; max abs err ..." for a failure message (long values cut at 80 characters)."""
    extra = dict(extra or {})
    parts = [str(extra.pop("detail"))] if extra.get("detail") else []
    if extra:
        parts.append(", ".join(f"{k}={str(v)[:80]}" for k, v in extra.items()))
    if max_abs_err is not None:
        parts.append(f"max abs err {max_abs_err:.3g}")
    return "".join(f"; {p}" for p in parts)


def classify(observed: np.ndarray, candidates: dict[str, np.ndarray], tol: Tol) -> str:
    """Name of the single candidate the observation matches within tol, else a description of the miss."""
    obs = np.asarray(observed, np.float64)
    hits = [name for name, exp in candidates.items() if bool(tol.allows(obs, np.asarray(exp, np.float64)).all())]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        return "ambiguous(" + "|".join(hits) + ")"
    errs = {n: _errors(obs, np.asarray(e, np.float64))[1] for n, e in candidates.items()}
    nearest = min(errs, key=errs.get)
    return f"neither (nearest {nearest}, max rel err {errs[nearest]:.3g})"
