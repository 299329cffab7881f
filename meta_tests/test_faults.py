"""Faults cost their own case: a hang (in Python or in native code) fails alone after --bn-case-timeout, a crash
(segfault, abort) is recorded as failed with its signal and the group resumes after it (the first attempt is a plain
pytest run: the hang in Python fails alone there), a group out of time is cut
short and counted as failed, a results folder that cannot be written is one line. Each on a toy test file in a tiny
inner pytest run (seconds), not a framework group."""

import json
import os
import subprocess
import sys

import pytest

from bnsuite import plugin_faults, runner
from bnsuite.adapters import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = '''
import ctypes, os, signal, time

def test_first():
    pass

def test_hangs_in_python():
    while True:
        time.sleep(0.05)

def test_hangs_in_native_code():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # as native code that never returns to Python
    ctypes.CDLL(None).sleep(600)

def test_segfaults():
    ctypes.string_at(0)

def test_aborts():
    os.abort()

def test_last():
    pass
'''


def toy(folder, body=TOY, name="test_toy_faults.py"):
    path = folder / name
    path.write_text(body)
    return str(path)


def outcomes(path):
    recs = [json.loads(line) for line in open(path, "rb")]
    return {r["test"].rsplit("::", 1)[-1]: r for r in recs if r["kind"] == "outcome"}, recs


@pytest.fixture(scope="module")
def faulty_group(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    return runner.run_group(sys.executable, "toy", {}, [toy(tmp), "-p", "bnsuite.plugin"], str(tmp / "run"),
                            ["--bn-case-timeout", "0.5"])


def test_hangs_and_crashes_cost_their_case_and_the_group_goes_on(faulty_group):
    r = faulty_group
    got, recs = outcomes(r["results"])
    assert {k: v["outcome"] for k, v in got.items()} == {
        "test_first": "passed", "test_hangs_in_python": "failed", "test_hangs_in_native_code": "failed",
        "test_segfaults": "failed", "test_aborts": "failed", "test_last": "passed"}, got
    assert "test_hangs_in_python: no return from its call within 0.5 s (--bn-case-timeout)" in \
        got["test_hangs_in_python"]["reason"]
    assert got["test_hangs_in_native_code"]["reason"].startswith("hung: no return from its call within 0.5 s")
    assert "SIGSEGV (signal 11)" in got["test_segfaults"]["reason"]
    assert "SIGABRT (signal 6)" in got["test_aborts"]["reason"]
    group = [x for x in recs if x["kind"] == "group"]
    assert len(group) == 1 and group[0]["status"] == "resumed" and len(group[0]["lost"]) == 3, group
    declared = sum(1 for x in recs if x["kind"] == "declaration")
    assert declared <= len(registry.BUILTIN), f"a resumed run writes its records once ({declared} declarations)"


def test_the_closing_line_and_summary_count_them(faulty_group):
    r = faulty_group
    assert runner.closing_line([r]) == "total: 2 passed, 4 failed, 0 skipped"
    assert not runner.group_ok(r) and "resumed after 3 crashed or hung cases" in runner.describe(r)


def test_a_group_out_of_time_is_cut_short_and_counted_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GROUP_TIMEOUT_S", 4)
    body = "import time\ndef test_a():\n    pass\ndef test_slow():\n    time.sleep(600)\n"
    r = runner.run_group(sys.executable, "toy", {}, [toy(tmp_path, body), "-p", "bnsuite.plugin"],
                         str(tmp_path / "run"), ["--bn-case-timeout", "100"])
    got, _ = outcomes(r["results"])
    assert r["status"] == "cut short" and "CUT SHORT: killed after 4 s" in runner.describe(r), r
    # the case it was killed in fails (on a machine so busy that pytest had not started it: the group does)
    lost = got.get("test_slow") or got.get("(group)")
    assert lost and lost["outcome"] == "failed", got
    line = runner.closing_line([r])
    assert line.startswith("total: ") and int(line.split(", ")[1].split()[0]) >= 1, line


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_bad_case_timeout_is_refused(value):
    class Config:
        def getoption(self, name):
            return value

    with pytest.raises(pytest.UsageError, match="expected a number of seconds >= 0"):
        plugin_faults.case_timeout(Config())


def test_a_bad_case_timeout_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", toy(tmp_path, "def test_a():\n    pass\n"), "-q",
                           "-p", "bnsuite.plugin", "--results=none", "--bn-case-timeout=soon"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4 and "--bn-case-timeout / BNSUITE_CASE_TIMEOUT: expected a number of seconds" \
        in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_default_results_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "results").write_text("a file where the results folder would be")  # unwritable even for root
    body = "def test_a(case):\n    pass\n"
    proc = subprocess.run([sys.executable, "-m", "pytest", toy(tmp_path, body), "-q", "-p", "no:cacheprovider",
                           "-p", "bnsuite.plugin",
                           "--adapter", "meta_tests.minimal_numpy_adapter:MinimalNumpyBatchNorm",
                           "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 4 and len(lines) == 1 and "cannot write the results file" in lines[0], \
        (proc.returncode, proc.stderr[-2000:], proc.stdout[-2000:])


@pytest.mark.parametrize("option", ["--run-dir", "--report"])
def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path, option):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "bnsuite", "matrix", "--only", "meta", "--python", sys.executable,
                           option, str(blocker / ("sub/x.html" if option == "--report" else "sub"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "cannot write the" in lines[0], proc.stderr
    assert "running" not in proc.stdout, "nothing may run before the folders are known to take files"


def test_junit_xml_per_group_and_merged(faulty_group):
    """CI dashboards read JUnit XML: <group>.xml beside <group>.jsonl, and one junit.xml for the run."""
    import xml.etree.ElementTree as ET

    from bnsuite.reports import junit

    r = faulty_group
    suite = ET.parse(r["results"].removesuffix(".jsonl") + ".xml").getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "toy"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "4", "0"), suite.attrib
    failures = {c.get("name"): c.find("failure").get("message") for c in suite if c.find("failure") is not None}
    assert "SIGSEGV" in failures["test_segfaults"] and failures["test_hangs_in_native_code"].startswith("hung:")
    assert all(float(c.get("time")) >= 0 for c in suite)
    merged = ET.parse(junit.write_merged(os.path.dirname(r["results"]))).getroot()
    assert merged.tag == "testsuites" and [s.get("name") for s in merged] == ["toy"] and merged.get("failures") == "4"


def test_after_a_failed_render_the_summary_names_no_old_screenshots(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report" / "index.html"
    report.parent.mkdir()
    for name in ("front.png", "matrix.png"):
        (report.parent / name).write_bytes(b"an earlier run's screenshot")
        os.utime(report.parent / name, (1, 1))
    r = {"group": "g", "rc": 0, "wall_s": 1.0, "counts": {"passed": 1}, "status": "complete", "lost": []}
    monkeypatch.setattr(runner, "run_all", lambda *a, **k: [r])
    monkeypatch.setattr(runner, "render", lambda *a, **k: 2)  # the report failed: no new screenshots
    rc = runner.run("matrix", [("g", ({}, []))], 1, sys.executable, str(tmp_path / "run"), str(report), [])
    out = capsys.readouterr().out
    assert rc == 1 and "report: " in out and "(exit 2)" in out and "screenshots" not in out, out


def test_a_crash_outside_any_case_cuts_the_group_short_and_counts(tmp_path):
    body = "import ctypes\nctypes.string_at(0)  # dies while pytest collects it\ndef test_a():\n    pass\n"
    r = runner.run_group(sys.executable, "toy", {}, [toy(tmp_path, body), "-p", "bnsuite.plugin"],
                         str(tmp_path / "run"), [])
    got, _ = outcomes(r["results"])
    assert r["status"] == "cut short" and "SIGSEGV" in r["reason"] and "outside any case" in r["reason"], r
    assert got["(group)"]["outcome"] == "failed" and runner.closing_line([r]) == "total: 0 passed, 1 failed, 0 skipped"
