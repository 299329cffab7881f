"""The HTML report: matrix states, escaping, offline-ness, drift, corrupt input, and a headless-Chromium look."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from bnsuite.adapters import nets
from bnsuite.reports import screenshot
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
            outcome="passed" if passed else "failed", repro="",
            reason="" if passed else "/usr/lib/python3.11/contextlib.py:144: AssertionError")


def write_results(path, *, torch_estimator="unbiased", finding_names=("torch_trap",)):
    w = ResultsWriter(str(path))
    w.write("env", group="g1", python="3.11", platform="linux", argv=["-q"], started="2026-01-01T00:00:00",
            env={"KERAS_BACKEND": "jax"}, versions={}, numeric={})
    w.write("env", group="g1", adapter="torch", versions={"torch": "2.5"}, numeric={"tf32": False})
    for pos, a, est, last in ((1, "keras", "biased", True), (0, "torch", "unbiased", False)):  # position, not file order
        w.write("declaration", adapter=a, adapter_class=f"adapters.{a}:BN", unavailable=None, position=pos,
                declaration={"running_var_estimator": {"value": est, "source": f"{a}/bn.py: var"},
                             "default_channels_last": {"value": last, "source": f"{a}/bn.py: axis"},
                             "freeze": {"eval": {"value": {"params_update": True}, "source": f"{a}/freeze.py"}}})
    for name in finding_names:
        w.write("finding", name=name, title=f"{name}: frozen layers move {INJECTION}", area="freeze",
                adapters=["torch"], versions="torch 2.5", severity="high", source="torch/bn.py: forward",
                upstream=None, properties=["running_var_estimator"], where=[], reproduce_with="",
                reproduction=f"findings/{name}.py", upstream_report=f"findings/{name}.upstream.md")
    for s_, t in (("torch", "keras"), ("keras", "torch"), ("torch", "torch"), ("keras", "keras")):
        w.write("matrix", name="port", source=s_, target=t, device="cpu", dtype="float32", correct_port_max_abs=3e-7,
                naive_inference_max_abs=0.0 if s_ == t else 2.5e-3, naive_running_var_k5_max_rel=0.34,
                source_eps=1e-5 if s_ == "torch" else 1e-3, target_default_eps=1e-5 if t == "torch" else 1e-3,
                source_momentum=0.1 if s_ == "torch" else 0.99, target_momentum=0.9 if t == "keras" else 0.1,
                target_default_momentum=0.99 if t == "keras" else 0.1,
                source_estimator="unbiased" if s_ == "torch" else "biased",
                target_estimator="unbiased" if t == "torch" else "biased")
    for a, layout in (("keras", nets.HWIO), ("torch", nets.OIHW)):  # as the networks declare them
        w.write("matrix", name="weight_layout", adapter=a, device="cpu", layout=layout, source=f"{a}/conv.py: kernel")
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
        w.write("curve", name="error_vs_batch_size", adapter=a, device="cpu", dtype="float32",
                x=[2, 8, 32, 128], y=[1e-3, 1e-4, 1e-5, 1e-6] if a == "torch" else [2e-3, 3e-4, 1e-5, "nan"],
                xlabel="batch size", ylabel="max abs err")
        w.write("matrix", name="freeze", adapter=a, device="cpu", idiom="eval()", normalizes_with="running",
                running_stats_update=False, params_update=True, passed=a == "torch",
                declared={"normalizes_with": "running"}, test=f"suites/test_freeze.py::t[{a}]")
    for a in ("torch", "keras"):  # one table per adapter in the records, one grouped table in the report
        w.write("table", name=f"network losses per step ({a}, cpu, float32)", columns=["step", "loss"],
                rows=[[1, 1.5], [2, 1.25]])
    w.close()
    return str(path)


def cell(html, state, text):
    """True when a matrix cell of this state class contains this text."""
    return re.search(rf'<td class="cell {state}"[^>]*>(?:(?!</td>).)*{re.escape(text)}', html, re.S) is not None


def section(html, sid):
    start = html.index(f'<section id="{sid}"')
    return html[start:html.index("</section>", start)]


@pytest.fixture
def report(tmp_path):
    out = tmp_path / "report" / "index.html"
    s = render([write_results(tmp_path / "new.jsonl")], str(out))
    assert s.exit_code == 0 and not s.problems
    return out.read_text(encoding="utf-8")


def test_matrix_states(report):
    matrix = section(report, "matrix")
    assert cell(matrix, "diverge", "unbiased") and cell(matrix, "diverge", "biased")  # known divergence, not red
    assert cell(matrix, "pass", "ok 1e-07")  # one short value: every check matched, worst error
    assert cell(matrix, "fail", "max abs err 0.5")
    assert "source: src.py: x" in matrix  # the check's source in the hover title
    assert "torch/bn.py: var" in section(report, "declarations")
    assert "no GPU visible" in matrix  # the unmeasured column is explained
    failures = section(report, "failures")
    assert "contextlib.py" not in failures  # where the assertion was raised: noise beside the failed checks
    assert "python -m pytest &#39;suites/test_x.py::test_training_output[keras-cpu-float32]&#39;" in failures  # repro


def test_order_and_grouping_come_from_the_results(report):
    """Columns follow the declarations' position (torch before keras, whatever the file order); rows are grouped
    by the area derived from the test module (test_x.py -> x), with no list of module names in the report."""
    head = section(report, "matrix")
    assert head.index(">torch</th>") < head.index(">keras</th>")
    assert re.search(r'class="rowname area-name"[^>]*>x</th>', head)


def test_front_page_answers_in_order(report):
    ids = re.findall(r'<section id="([a-z-]+)"', report)
    assert ids[:5] == ["findings", "porting", "freeze", "batch-size", "failures"], ids
    assert ids.index("matrix") > ids.index("failures")
    findings = section(report, "findings")
    assert "not reported upstream" in findings and "findings/torch_trap.py" in findings
    assert "reproduced in this run" in findings  # its demonstrating check passed here
    assert re.search(r'By adapter: <span><b>torch</b> <a href="#finding-torch_trap">1</a>', findings)  # maintainers
    porting = section(report, "porting")
    assert "set 1e-05 (default 0.001)" in porting and "set 0.9 (default 0.99)" in porting
    assert "transpose inputs" in porting and "cannot be converted" in porting and "0.0025" in porting
    layouts = porting[porting.index("Network weight layouts"):]  # one row per adapter, in the matrix's order
    assert re.search(r"<b>torch</b></td><td class=\"mono nowrap\">\(out, in, kh, kw\)  OIHW</td><td class=\"mono nowrap\">\(out, in\)"
                     r"</td><td class=\"small\">torch/conv.py: kernel</td>.*<b>keras</b></td><td class=\"mono nowrap\">"
                     r"\(kh, kw, in, out\)  HWIO", layouts, re.S)
    freeze = section(report, "freeze")
    assert "eval()" in freeze and ">running<" in freeze
    batch = section(report, "batch-size")
    assert "<svg" in batch and "<polyline" in batch and 'class="reading"' in batch and "Largest:" in batch


def test_escapes_untrusted_text_and_is_offline(report):
    assert INJECTION not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', report, re.I)
    assert "<script" not in report.lower() and "<link" not in report.lower()


def test_tables_are_grouped_not_repeated(report):
    tables = section(report, "tables")
    assert tables.count("network losses per step") == 1  # one table ...
    assert "torch, cpu, float32" in tables and "keras, cpu, float32" in tables  # ... with a column naming the case


def test_bare_results_still_render(tmp_path):
    bare = tmp_path / "bare.jsonl"
    w = ResultsWriter(str(bare))
    w.write("env", group="", python="3.11", platform="x", argv=[], started="", env={}, versions={}, numeric={})
    w.close()
    render([str(bare)], str(tmp_path / "bare.html"))
    html = (tmp_path / "bare.html").read_text()
    for what in ("finding records", "porting records", "freeze records", "batch-size curves"):
        assert f"No {what} in these results" in html


def test_a_new_suites_records_appear_without_code_changes(tmp_path):
    """A suite the report has never heard of (its own area, property and matrix record names) still shows."""
    path = tmp_path / "new_suite.jsonl"
    w = ResultsWriter(str(path))
    check(w, "torch", "replica_sync_mean", "synced", "synced")
    w.write("check", adapter="torch", device="cpu", dtype="float32", property="norm_output", declared="oracle",
            observed="matches", passed=True, max_abs_err=1e-7, test="bnsuite/suites/test_norms.py::t[torch]",
            area="norms", repro="", snippet="")
    w.write("matrix", name="dropout_order", adapter="torch", device="cpu", idiom="bn_then_dropout", passed=True)
    w.close()
    render([str(path)], str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    matrix = section(html, "matrix")
    assert "replica_sync_mean" in matrix and "norm_output" in matrix and ">norms</th>" in matrix
    assert "dropout_order" in matrix and "bn_then_dropout" in matrix


def test_compare_reports_drift(tmp_path, capsys):
    old = write_results(tmp_path / "old.jsonl")
    new = write_results(tmp_path / "new.jsonl", torch_estimator="biased")
    out = tmp_path / "r.html"
    assert main([new, "-o", str(out), "--compare", old]) == 0
    html = out.read_text()
    drift = section(html, "drift")
    assert "running_var_estimator" in drift and "unbiased" in drift and "biased" in drift and "→" in drift
    assert "training_output" not in drift  # unchanged keys are not listed
    assert "newly failing" in drift
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
    assert ">torch</th>" in out.read_text()  # every valid record still reported


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
    cmd = [CHROMIUM, *screenshot.FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


NINE = ["torch", "keras-tensorflow", "keras-jax", "keras-torch", "tf_keras", "tf1-keras", "tf1-graph", "flax-linen",
        "flax-nnx"]
FRONT_PAGE = ("findings", "porting", "freeze", "batch-size", "drift", "failures", "matrix")
# Reads the rendered layout and leaves it in the DOM for --dump-dom (added to a COPY of the report: the report itself
# has no scripts).
PROBE = """<script>
addEventListener("load", () => {
  const wrap = document.querySelector("#behaviour-matrix").parentElement;
  const heads = [...document.querySelectorAll("#behaviour-matrix thead th.colhead")];
  const out = {width: innerWidth, scroll: [wrap.scrollWidth, wrap.clientWidth],
               columns: heads.map(h => [h.textContent.trim(), Math.round(h.getBoundingClientRect().right)]),
               sections: Object.fromEntries([...document.querySelectorAll("section")].map(s => [s.id, s.offsetHeight]))};
  const pre = document.createElement("pre"); pre.id = "layout-probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def nine_adapter_results(path, old=False):
    """A full-width run: nine adapters, two areas, every front-page record kind."""
    w = ResultsWriter(str(path))
    w.write("env", group="all", python="3.11", platform="linux", argv=[], started="2026-01-01T00:00:00", env={},
            versions={}, numeric={})
    for pos, a in enumerate(NINE):
        w.write("declaration", adapter=a, adapter_class=f"x.{a}:BN", unavailable=None, position=pos,
                declaration={"default_eps": {"value": 1e-5 if pos == 0 else 1e-3, "source": f"{a}: eps"},
                             "default_channels_last": {"value": pos > 0, "source": f"{a}: axis"}})
        for prop, obs in (("training_output", "matches"), ("inference_output", "matches"),
                          ("running_var_estimator", "unbiased" if pos in (0, 4) else "biased")):
            check(w, a, prop, obs if obs != "matches" else "oracle", obs, err=1e-7 * (pos + 1))
        w.write("check", adapter=a, device="cpu", dtype="float32", property="freeze_running_stats_update",
                declared=False, observed=old and pos == 3, passed=not (old and pos == 3), area="freeze",
                test=f"suites/test_freeze.py::t[{a}-cpu-float32-eval]", repro="", snippet="")
        w.write("matrix", name="freeze", adapter=a, device="cpu", idiom="eval", normalizes_with="running",
                running_stats_update=False, params_update=True, passed=True, declared={}, source=f"{a}: freeze")
        w.write("curve", name="inference_deviation_vs_batch_size", adapter=a, device="cpu", dtype="float32",
                x=[1, 2, 8, 32], y=[1e-7 * pos, 1e-8 * pos, 0.0, 0.0], xlabel="batch size", ylabel="max deviation")
        for t in NINE:
            w.write("matrix", name="port", source=a, target=t, device="cpu", dtype="float32",
                    correct_port_max_abs=1e-7, naive_inference_max_abs=0.0 if a == t else 2.6e-3,
                    naive_running_var_k5_max_rel=0.3, source_eps=1e-5, target_default_eps=1e-3, source_momentum=0.1,
                    target_momentum=0.9, target_default_momentum=0.99, source_estimator="unbiased",
                    target_estimator="biased")
    w.write("finding", name="frozen_moves", title="Frozen layers move.", area="freeze", adapters=["torch"],
            versions="torch 2.5", severity="high", source="torch: forward", upstream="pytorch/pytorch#1 (open)",
            properties=["freeze_running_stats_update"], where=[], reproduction="findings/frozen_moves.py",
            upstream_report=None)
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    out = d / "report" / "index.html"
    s = render([nine_adapter_results(d / "new.jsonl")], str(out), compare=[nine_adapter_results(d / "old.jsonl", True)])
    assert s.exit_code == 0, s.problems
    assert s.seconds < 5, f"rendering took {s.seconds:.1f} s"
    return out


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [1366, 1920])
def test_headless_chromium_layout(full_report, tmp_path, width):
    """Screenshots at both widths, and the rendered DOM: every front-page section present and laid out, and every
    adapter column of the matrix visible without horizontal scrolling."""
    png = tmp_path / f"report-{width}.png"
    _chromium(tmp_path, f"--screenshot={png}", f"--window-size={width},1400", full_report.as_uri())
    assert screenshot.problem(str(png)) is None, screenshot.problem(str(png))
    shot_dir = os.environ.get("BNSUITE_SCREENSHOT_DIR")
    if shot_dir:
        os.makedirs(shot_dir, exist_ok=True)
        shutil.copy(png, os.path.join(shot_dir, png.name))
    probed = tmp_path / "probed.html"
    probed.write_text(full_report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(tmp_path, "--dump-dom", f"--window-size={width},1400", "--virtual-time-budget=3000",
                    probed.as_uri()).stdout
    m = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    assert m, f"no layout probe in the dumped DOM ({len(dom)} characters)"
    layout = json.loads(html_lib.unescape(m.group(1)))
    for sid in FRONT_PAGE:
        assert layout["sections"].get(sid, 0) > 0, f"section {sid} missing or empty at {width} px: {layout['sections']}"
    assert [c for c, _ in layout["columns"]] == NINE, layout["columns"]
    hidden = [c for c, right in layout["columns"] if right > layout["width"]]
    assert not hidden, f"at {width} px these adapter columns need horizontal scrolling: {hidden}"
    assert layout["scroll"][0] <= layout["scroll"][1], f"the matrix scrolls horizontally at {width} px: {layout}"


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")


@needs_chromium
def test_runner_screenshots_show_what_they_are_named_after(full_report, tmp_path):
    """The runner's PNGs (python -m bnsuite.reports.screenshot): none blank, matrix.png showing the matrix's cells,
    and the runner's line naming each file."""
    report = tmp_path / "index.html"
    shutil.copy(full_report, report)
    proc = subprocess.run([sys.executable, "-m", "bnsuite.reports.screenshot", str(report)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name, (what, *_rest) in screenshot.SHOTS.items():
        assert f"screenshot of {what}: {tmp_path / name}" in proc.stdout, proc.stdout
    assert not list(tmp_path.glob("*.shot.html")), "the section-only copies are left behind"


@needs_chromium
def test_blank_screenshots_are_caught(tmp_path):
    """problem() catches the blank screenshot Chromium takes at an anchor, an empty page, and a page without the
    colours a screenshot is named after."""
    page = tmp_path / "p.html"
    page.write_text("<html><body>" + "".join(f"<p style='height:90px;background:#eee'>paragraph {i}</p>" for i in range(40))
                    + "<h2 id='end'>the end</h2></body></html>")
    at_anchor, empty, text = (tmp_path / n for n in ("anchor.png", "empty.png", "text.png"))
    _chromium(tmp_path, f"--screenshot={at_anchor}", "--window-size=800,600", page.as_uri() + "#end")
    assert "blank" in (screenshot.problem(str(at_anchor)) or ""), \
        "a screenshot at an anchor is no longer blank: screenshot.py's reason for section-only copies is stale"
    (tmp_path / "e.html").write_text("<html><body></body></html>")
    _chromium(tmp_path, f"--screenshot={empty}", "--window-size=800,600", (tmp_path / "e.html").as_uri())
    assert "blank" in (screenshot.problem(str(empty)) or "")
    _chromium(tmp_path, f"--screenshot={text}", "--window-size=800,600", page.as_uri())
    assert screenshot.problem(str(text)) is None
    assert "named after" in (screenshot.problem(str(text), screenshot.SHOTS["matrix.png"][3]) or "")
    assert "not written" in screenshot.problem(str(tmp_path / "none.png"))
