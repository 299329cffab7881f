"""The HTML report: matrix states, escaping, offline-ness, drift, corrupt input, and a headless-Chromium look."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from bnsuite.reports.render import main, render
from bnsuite.reports.results import ResultsWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
INJECTION = "<script>alert(1)</script>"


def check(w, adapter, prop, declared, observed, passed=True, err=None, device="cpu", message="", source="src.py: x"):
    test = f"suites/test_x.py::test_{prop}[{adapter}-{device}-float32]"
    w.write("check", adapter=adapter, device=device, dtype="float32", property=prop, declared=declared,
            observed=observed, passed=passed, max_abs_err=err, message=message, source=source, test=test,
            repro=f"python -m pytest '{test}'", snippet=f"import {adapter}\nbn = BatchNorm()")
    w.write("outcome", adapter=adapter, device=device, dtype="float32", test=test,
            outcome="passed" if passed else "failed", reason="" if passed else "AssertionError", repro="")


def write_results(path, *, torch_estimator="unbiased"):
    w = ResultsWriter(str(path))
    w.write("env", group="g1", python="3.11", platform="linux", argv=["-q"], started="2026-01-01T00:00:00",
            env={"KERAS_BACKEND": "jax"}, versions={}, numeric={})
    w.write("env", group="g1", adapter="torch", versions={"torch": "2.5"}, numeric={"tf32": False})
    for a, est in (("torch", "unbiased"), ("keras", "biased")):
        w.write("declaration", adapter=a, adapter_class=f"adapters.{a}:BN", unavailable=None,
                declaration={"running_var_estimator": {"value": est, "source": f"{a}/bn.py: var"},
                             "freeze": {"eval": {"value": {"params_update": True}, "source": f"{a}/freeze.py"}}})
    # known divergence: both behave as declared, but they declare different estimators
    check(w, "torch", "running_var_estimator", "unbiased", torch_estimator, passed=torch_estimator == "unbiased",
          err=3e-8)
    check(w, "keras", "running_var_estimator", "biased", "biased", err=2e-8)
    # plain pass, and a failure carrying an HTML injection
    check(w, "torch", "training_output", "oracle", "matches", err=1e-7)
    check(w, "keras", "training_output", "oracle", "max abs err 0.5", passed=False, err=0.5,
          message=f"training_output off {INJECTION}")
    w.write("outcome", adapter="torch", device="gpu", dtype="float32", test="suites/test_x.py::t[torch-gpu]",
            outcome="skipped", reason="Skipped: no GPU visible", repro="")
    for a in ("torch", "keras"):
        w.write("curve", name="error vs batch size", adapter=a, device="cpu", dtype="float32",
                x=[2, 8, 32, 128], y=[1e-3, 1e-4, 1e-5, 1e-6] if a == "torch" else [2e-3, 3e-4, 1e-5, "nan"],
                xlabel="batch size", ylabel="max abs err")
        w.write("matrix", name="freeze", adapter=a, device="cpu", idiom="eval()", normalizes_with="running",
                running_stats_update=False, params_update=True, passed=a == "torch",
                declared={"normalizes_with": "running"}, test=f"suites/test_freeze.py::t[{a}]")
    w.write("table", name="crossfw_heatmap", columns=["from \\ to", "torch", "keras"],
            rows=[["torch", 0.0, 1e-3], ["keras", 1e-3, 0.0]])
    w.close()
    return str(path)


def cell(html, state, text):
    """True when a matrix cell of this state class contains this text."""
    return re.search(rf'<td class="cell {state}"[^>]*>(?:(?!</td>).)*{re.escape(text)}', html, re.S) is not None


@pytest.fixture
def report(tmp_path):
    out = tmp_path / "report" / "index.html"
    s = render([write_results(tmp_path / "new.jsonl")], str(out))
    assert s.exit_code == 0 and not s.problems
    return out.read_text(encoding="utf-8")


def test_matrix_states(report):
    assert "torch / cpu" in report and "keras / cpu" in report
    assert cell(report, "diverge", "unbiased") and cell(report, "diverge", "biased")  # known divergence, not red
    assert cell(report, "pass", "matches")
    assert cell(report, "fail", "max abs err 0.5")
    assert "torch/bn.py: var" in report  # declaration source in the hover title
    assert "no GPU visible" in report  # the unmeasured column is explained
    failures = report[report.index('id="failures"'):report.index('id="declarations"')]
    assert "python -m pytest &#39;suites/test_x.py::test_training_output[keras-cpu-float32]&#39;" in failures  # repro


def test_escapes_untrusted_text_and_is_offline(report):
    assert INJECTION not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', report, re.I)
    assert "<script" not in report.lower() and "<link" not in report.lower()


def test_optional_sections(report, tmp_path):
    assert "<svg" in report and "<polyline" in report and "batch size" in report
    assert "Freeze matrix" in report and cell(report, "fail", "normalizes: running")
    assert "crossfw_heatmap" in report and "background:rgb(" in report
    assert "absent" in report and "naive-port table" in report
    bare = tmp_path / "bare.jsonl"
    w = ResultsWriter(str(bare))
    w.write("env", group="", python="3.11", platform="x", argv=[], started="", env={}, versions={}, numeric={})
    w.close()
    render([str(bare)], str(tmp_path / "bare.html"))
    html = (tmp_path / "bare.html").read_text()
    assert "freeze matrix, batch-size curves, cross-framework heat map, naive-port table" in html


def test_compare_reports_drift(tmp_path, capsys):
    old = write_results(tmp_path / "old.jsonl")
    new = write_results(tmp_path / "new.jsonl", torch_estimator="biased")
    out = tmp_path / "r.html"
    assert main([new, "-o", str(out), "--compare", old]) == 0
    html = out.read_text()
    drift = html[html.index('id="drift"'):]
    assert "running_var_estimator" in drift and "unbiased" in drift and "biased" in drift and "→" in drift
    assert "training_output" not in drift  # unchanged keys are not listed
    assert str(out) in capsys.readouterr().out  # final line names the report


def test_directory_input(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    write_results(d / "a.jsonl")
    s = render([str(d)], str(tmp_path / "r.html"))
    assert s.files == [str(d / "a.jsonl")] and s.exit_code == 0


def test_corrupt_line_still_writes_report(tmp_path, capsys):
    path = write_results(tmp_path / "x.jsonl")
    with open(path, "a") as fh:
        fh.write("{not json\n")
    out = tmp_path / "r.html"
    assert main([path, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{path}:") and "not a JSON record" in err[0]
    assert "torch / cpu" in out.read_text()  # every valid record still reported


def test_empty_input_exits_2(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = subprocess.run([sys.executable, "-m", "bnsuite.reports.render", str(empty), "-o", str(tmp_path / "r.html")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_missing_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bnsuite.reports.render", str(tmp_path / "nope.jsonl"),
                           "-o", str(tmp_path / "r.html")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot open results file" in proc.stderr


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_headless_chromium_renders_matrix(report, tmp_path):
    html = tmp_path / "report" / "index.html"
    png = tmp_path / "matrix.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,1000", html.as_uri())
    assert png.exists() and png.stat().st_size > 10_000, "chromium wrote no screenshot"
    shot_dir = os.environ.get("BNSUITE_SCREENSHOT_DIR")
    if shot_dir:
        os.makedirs(shot_dir, exist_ok=True)
        shutil.copy(png, os.path.join(shot_dir, "matrix.png"))
    dom = _chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    assert 'class="matrix"' in dom and "running_var_estimator" in dom and "keras / cpu" in dom
    assert "max abs err 0.5" in dom
