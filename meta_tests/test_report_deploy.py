"""The report's deploying table is built from the deploy suite's records only: a run whose output does not keep the
source's mode is marked, the exported node's attributes and stored state are shown, and no records mean no table."""

from __future__ import annotations

from bnsuite.reports.render import render
from bnsuite.reports.results import ResultsWriter


def _results(path, with_deploy: bool):
    w = ResultsWriter(str(path))
    w.write("env", group="g1", python="3.11", platform="linux", argv=["-q"], started="2026-01-01T00:00:00", env={},
            versions={}, numeric={})
    w.write("outcome", test="t::a", area="deploy", adapter="torch", device="cpu", dtype="float32", outcome="passed",
            reason="", repro="")
    if with_deploy:
        run = dict(adapter="torch", device="cpu", model="layer", runtime="ort-off", tol_oracle=8.7e-6,
                   err_framework=4.8e-7, precision="float32", folding="BatchNorm kept", runtime_version="1.32.0",
                   passed=True)
        w.write("matrix", name="deploy", test="t::a", exporter="torch.onnx-dynamo", mode="train-model",
                declared_statistics="running", observed_statistics="running", err_oracle=5.3e-7, **run)
        w.write("matrix", name="deploy", test="t::b", exporter="torch.onnx-ts", mode="training",
                declared_statistics="batch", observed_statistics="batch", err_oracle=5.4e-7, running_var="biased",
                source_estimator="unbiased", **run)
        w.write("matrix", name="deploy_export", test="t::c", adapter="torch", device="cpu", model="layer",
                exporter="torch.onnx-ts", mode="training", bn_node="BatchNormalization", epsilon=0.001,
                momentum=0.7, training_mode=1, keeps_state=False, batch_dim="N", seconds=0.2, passed=True)
    w.close()
    return str(path)


def _section(html: str) -> str:
    start = html.index('<section id="deploying">')
    return html[start:html.index("</section>", start)]


def test_deploying_table_shows_what_survives(tmp_path):
    out = tmp_path / "index.html"
    s = render([_results(tmp_path / "r.jsonl", True)], str(out))
    assert s.exit_code == 0 and not s.problems
    html = out.read_text(encoding="utf-8")
    assert '<a href="#deploying">Deploying</a>' in html
    table = _section(html)
    dynamo = table[table.index("torch.onnx-dynamo (train-model)"):]
    assert "✗ </span>running / running" in dynamo.split("</tr>")[0]  # a train-mode model run with running stats
    ts = table[table.index("torch.onnx-ts (training)"):].split("</tr>")[0]
    assert "0.001 · 0.7 · 1<" in ts and ">CHANGED<" in ts and "biased (unbiased)" in ts and "✗" not in ts


def test_no_deploy_records_no_table(tmp_path):
    out = tmp_path / "index.html"
    render([_results(tmp_path / "r.jsonl", False)], str(out))
    html = out.read_text(encoding="utf-8")
    assert "No deploy records" in _section(html) and 'href="#deploying"' not in html
