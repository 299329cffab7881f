"""The results file: JSON lines, one record per measurement, appended and flushed as it is measured.

Record kinds (field "kind"):
* "env":         one per run: group, python, platform, framework versions, numeric settings, argv.
* "declaration": one per adapter in the run: the declared semantics with their sources.
* "check":       one per property measured: adapter, device, dtype, property, declared, observed, passed,
                 max_abs_err, max_rel_err, tolerance, message, test id, reproduction.
* "outcome":     one per test: passed / failed / skipped / error, with the reason.
* "curve", "matrix", "table": structured data for the report's plots and tables.
* "finding":     one per declared finding (bnsuite/findings.toml) per run: what, where, source, upstream, the
                 properties whose checks demonstrate it, its reproduction.
* "started":     one per test, just before it runs: a started test without an outcome crashed or hung its process.
* "group":       one per group of a runner's run: complete, resumed after a crashed or hung case, or cut short.

The fields of each kind are documented, and checked, by the JSON Schema beside this module (results.schema.json,
shipped in the package). The reader takes every file record by record: a record that is not UTF-8, not JSON, or not
of its kind's shape costs itself only, and each file's bad records are named by file and line in one problem line.

This module imports nothing from bnsuite.adapters/ or suites/: the report reads files, not objects. The writer is
standard library only; the reader validates with jsonschema (imported when it first reads).
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Iterator

SCHEMA = 1
KINDS = {"env", "declaration", "check", "outcome", "curve", "matrix", "table", "finding", "started", "group"}
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.schema.json")
SHOWN_PER_FILE = 5  # bad lines named in a file's problem line; the rest are counted


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
        if self._fh.tell() and not _ends_with_newline(path):  # a process killed mid-record: start a fresh line
            self._fh.write("\n")

    def write(self, kind: str, **fields: Any) -> None:
        """Append one record, flushed to the operating system (it survives the process crashing)."""
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


@functools.lru_cache(maxsize=1)
def validator():
    """The JSON Schema validator of results.schema.json."""
    try:
        import jsonschema
    except ImportError:
        raise ResultsFileError("reading results needs the jsonschema package (pip install jsonschema; it is a "
                               "dependency of bnsuite)") from None
    with open(SCHEMA_FILE, encoding="utf-8") as fh:
        schema = json.load(fh)
    return jsonschema.Draft202012Validator(schema)


def shape_problem(rec: Any) -> str | None:
    """Why `rec` is not a results record of its kind's shape (one line), or None."""
    errors = sorted(validator().iter_errors(rec), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return None
    e = errors[0]
    where = "/".join(map(str, e.path))
    kind = rec.get("kind") if isinstance(rec, dict) and isinstance(rec.get("kind"), str) else "record"
    return f"{kind}{'.' + where if where else ''}: {e.message[:200]}"


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _parse(path: str, lineno: int, raw: bytes) -> dict:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsFileError(f"{path}:{lineno}: not UTF-8 text (byte {e.start})") from None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"{path}:{lineno}: not a JSON record ({e.msg})") from None
    if not isinstance(rec, dict) or rec.get("kind") not in KINDS:
        raise ResultsFileError(f"{path}:{lineno}: not a results record (no known 'kind')")
    if rec.get("schema") != SCHEMA:
        raise ResultsFileError(f"{path}:{lineno}: schema {rec.get('schema')!r}, expected {SCHEMA}")
    why = shape_problem(rec)
    if why:
        raise ResultsFileError(f"{path}:{lineno}: {why}")
    return rec


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise ResultsFileError(f"{path}: cannot open results file ({e.strerror})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield lineno, line


def read(path: str) -> Iterator[dict]:
    """Yield the records of one file; the first bad record raises ResultsFileError."""
    for lineno, line in _lines(path):
        yield _parse(path, lineno, line)


def read_lenient(path: str) -> list[dict]:
    """The JSON objects of one file in file order, unvalidated and standard library only (for the runner and the JUnit
    writer, which read a file its run may have cut short): other lines are passed over (the report names them), an
    unreadable file gives none."""
    recs = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:  # not JSON, or not UTF-8
                    continue
                if isinstance(rec, dict):
                    recs.append(rec)
    except OSError:
        pass
    return recs


def read_file(path: str) -> tuple[list[dict], str | None]:
    """Every valid record of one file (tagged with its file), and one problem line naming its bad records by line
    (None where there are none): an empty file, an unreadable one, or records that are not UTF-8, JSON or their kind's
    shape. A bad record costs itself only."""
    records: list[dict] = []
    bad: list[str] = []
    try:
        for lineno, line in _lines(path):
            try:
                records.append({**_parse(path, lineno, line), "_file": path})
            except ResultsFileError as e:
                bad.append(str(e).removeprefix(f"{path}:"))
    except ResultsFileError as e:
        return records, str(e)
    if not bad:
        return records, None if records else f"{path}: empty results file (no records)"
    shown = "; ".join(f"line {b}" for b in bad[:SHOWN_PER_FILE])
    more = f"; and {len(bad) - SHOWN_PER_FILE} more" if len(bad) > SHOWN_PER_FILE else ""
    return records, f"{path}: {len(bad)} bad record{'s' * (len(bad) > 1)} skipped, {len(records)} read: {shown}{more}"


def read_all(paths: list[str]) -> tuple[list[dict], list[str]]:
    """Read many files leniently: every valid record (tagged with its file), and one problem line per file with bad
    records (or empty, or unreadable), so that a bad record never costs the measurements around it."""
    validator()  # a missing jsonschema is one error for the whole read, not one per record
    records: list[dict] = []
    errors: list[str] = []
    for path in paths:
        recs, problem = read_file(path)
        records += recs
        if problem:
            errors.append(problem)
    return records, errors
