"""The results file: appended and flushed per record, read record by record against the shipped JSON Schema: a bad
record (bad bytes, not JSON, the right kind in the wrong shape) costs itself only and is named by file and line in one
problem line per file; an empty file is mentioned."""

import json
import os
import subprocess
import sys

from bnsuite.reports.results import SCHEMA_FILE, ResultsWriter, read_all, validator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = dict(adapter="torch", device="cpu", dtype="float32", message="ok", test="t.py::test_x[torch]")


def test_the_schema_is_a_valid_json_schema_and_shipped():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(json.load(open(SCHEMA_FILE)))
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert "results.schema.json" in text, "the schema must be package data, so an installed reader finds it"


def test_records_survive_bad_lines_named_in_one_line(tmp_path):
    p = tmp_path / "r.jsonl"
    w = ResultsWriter(str(p))
    w.write("check", property="a", passed=True, value=float("nan"), **CHECK)
    w.close()
    with open(p, "ab") as fh:
        fh.write(b"{not json\n")
        fh.write(bytes(range(128, 256)) + b"\n")  # bad bytes
        fh.write(b'{"schema": 1, "kind": "finding"}\n')  # the right kind, none of its fields
        fh.write(b'{"schema": 1, "kind": "check"}\n')
    w = ResultsWriter(str(p))
    w.write("check", property="b", passed=False, **CHECK)
    w.close()
    records, errors = read_all([str(p)])
    assert [r["property"] for r in records] == ["a", "b"]
    assert records[0]["value"] == "nan"
    assert len(errors) == 1, errors
    e = errors[0]
    assert e.startswith(f"{p}: 4 bad records skipped, 2 read: "), e
    for part in ("line 2: not a JSON record", "line 3: not UTF-8 text", "line 4: finding: 'name' is a required",
                 "line 5: check: 'adapter' is a required property"):
        assert part in e, (part, e)


def test_a_check_of_the_wrong_shape_is_not_counted():
    rec = {"schema": 1, "kind": "check", **CHECK, "property": "p", "passed": "yes"}
    assert list(validator().iter_errors(rec)), "passed must be a boolean"


def test_empty_and_missing_files_are_mentioned(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    records, errors = read_all([str(empty), str(tmp_path / "nope.jsonl")])
    assert records == [] and len(errors) == 2, errors
    assert errors[0] == f"{empty}: empty results file (no records)"
    assert "cannot open results file" in errors[1]


def test_the_report_is_written_from_everything_valid(tmp_path):
    good = tmp_path / "good.jsonl"
    w = ResultsWriter(str(good))
    w.write("outcome", test="t.py::test_x", outcome="passed", reason="")
    w.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(os.urandom(256) + b"\n" + b'{"schema":1,"kind":"finding"}\n')
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "bnsuite.reports.render", str(tmp_path), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and out.exists(), (proc.returncode, proc.stderr)  # written; 1: some input was bad
    assert "Traceback" not in proc.stderr and f"{bad}:" in proc.stderr, proc.stderr


def test_a_record_cut_mid_line_costs_only_itself(tmp_path):
    """A process killed mid-record leaves half a line; the next writer (the runner, a resumed run) starts a new one."""
    p = tmp_path / "r.jsonl"
    p.write_text('{"schema": 1, "kind": "outcome", "test": "t::a", "outcome": "passed", "reason": ""}\n'
                 '{"schema": 1, "ki')
    w = ResultsWriter(str(p))
    w.write("outcome", test="t::b", outcome="failed", reason="crashed")
    w.close()
    records, errors = read_all([str(p)])
    assert [r["test"] for r in records] == ["t::a", "t::b"] and len(errors) == 1 and "line 2" in errors[0], errors
