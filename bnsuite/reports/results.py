"""The results file: JSON lines, one record per measurement, appended and flushed as it is measured.

Record kinds (field "kind"):
* "env":         one per run: group, python, platform, framework versions, numeric settings, argv.
* "declaration": one per adapter in the run: the declared semantics with their sources.
* "check":       one per property measured: adapter, device, dtype, property, declared, observed, passed,
                 max_abs_err, max_rel_err, tolerance, message, test id, reproduction.
* "outcome":     one per test: passed / failed / skipped / error, with the reason.
* "curve", "matrix": structured data for the report's plots and tables (later suites).
* "finding":     one per declared finding (bnsuite/findings.toml) per run: what, where, source, upstream, the
                 properties whose checks demonstrate it, its reproduction.

This module imports nothing from bnsuite.adapters/ or suites/: the report reads files, not objects.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterator

SCHEMA = 1
KINDS = {"env", "declaration", "check", "outcome", "curve", "matrix", "table", "finding"}


class ResultsFileError(Exception):
    """A results file that cannot be read; str() is one line naming the file and line."""


def _clean(v: Any) -> Any:
    """JSON-safe values: NaN/inf become strings, NumPy scalars and arrays become Python values."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return repr(v)
        return v
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


class ResultsWriter:
    """Appends records to one file; every record is flushed to the OS before the call returns, so a process that
    crashes or is killed mid-run loses nothing it measured. The file is fsynced once, at close: an fsync per
    record (milliseconds each, a thousand records per group) would guard only against the machine crashing."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        rec = {"schema": SCHEMA, "kind": kind, **_clean(fields)}
        self._fh.write(json.dumps(rec, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._fh.close()


def _parse(path: str, lineno: int, line: str) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"{path}:{lineno}: not a JSON record ({e.msg})") from None
    if not isinstance(rec, dict) or rec.get("kind") not in KINDS:
        raise ResultsFileError(f"{path}:{lineno}: not a results record (no known 'kind')")
    if rec.get("schema") != SCHEMA:
        raise ResultsFileError(f"{path}:{lineno}: schema {rec.get('schema')!r}, expected {SCHEMA}")
    return rec


def _lines(path: str) -> Iterator[tuple[int, str]]:
    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise ResultsFileError(f"{path}: cannot open results file ({e.strerror})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield lineno, line


def read(path: str) -> Iterator[dict]:
    """Yield the records of one file; the first corrupt line raises ResultsFileError."""
    for lineno, line in _lines(path):
        yield _parse(path, lineno, line)


def read_all(paths: list[str]) -> tuple[list[dict], list[str]]:
    """Read many files leniently: every valid record (tagged with its file), and one error line per bad line or
    unreadable file, so that a corrupt line never costs the measurements around it."""
    records: list[dict] = []
    errors: list[str] = []
    for path in paths:
        try:
            for lineno, line in _lines(path):
                try:
                    records.append({**_parse(path, lineno, line), "_file": path})
                except ResultsFileError as e:
                    errors.append(str(e))
        except ResultsFileError as e:
            errors.append(str(e))
    return records, errors
