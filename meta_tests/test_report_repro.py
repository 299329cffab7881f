"""A failure's reproduction script, as the report shows it, runs: taken from a real failing case of a broken torch
adapter (its records in the broken-adapter run, meta_tests/broken_run.py, which ran that case), run in a fresh
process, it calls the layer through the adapter and prints the layer's own value beside the declared one, and the
breakage shows in what it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np

from bnsuite.reports.render import render
from meta_tests import broken_run
from meta_tests.broken.base import ref
from meta_tests.broken.layer import BiasedRunningVar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE = ("bnsuite/suites/test_running_stats.py::test_running_var_estimator"
        "[broken-biased-running-var-cpu-float32-NCHW]")
ADAPTER = ref(BiasedRunningVar)  # "module:Class", as a user passes --adapter


def _vector(line: str) -> np.ndarray:
    return np.array([float(v) for v in line[line.rindex("[") + 1:line.rindex("]")].split()])


def test_failure_script_calls_the_layer(tmp_path):
    proc, all_records = broken_run.run()
    # the case's records, with its adapter's declaration and environment, as a run of that one case writes them
    records = [r for r in all_records if r.get("test") == CASE or
               (r.get("kind") in ("env", "declaration") and r.get("adapter") == BiasedRunningVar.id)]
    outcomes = [r["outcome"] for r in records if r.get("kind") == "outcome"]
    assert outcomes == ["failed"], (outcomes, proc.stdout[-3000:] + proc.stderr[-3000:])
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    failed = [r for r in records if r.get("kind") == "check" and r.get("passed") is False]
    assert [r["property"] for r in failed] == ["running_var_estimator"], failed
    script = failed[0]["script"]
    assert f"load({ADAPTER!r})" in script and "bn.forward(x, training=True)" in script

    html = tmp_path / "index.html"
    render([str(results)], str(html))
    assert "bn.forward(x, training=True)" in html.read_text(encoding="utf-8")  # the report shows this script

    path = tmp_path / "repro.py"
    path.write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    run = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    layer = re.search(r"^running var \(unbiased estimator declared\) after the step, layer: .*$", out, re.M)
    oracle = re.search(r"^ +declared \(oracle\): .*$", out[layer.end():] if layer else "", re.M)
    assert layer and oracle, out
    # the adapter feeds the running variance the biased batch variance, (n-1)/n of the unbiased one: the layer's
    # running variance ends below the declared (unbiased) oracle in every channel
    assert np.all(_vector(layer.group()) < _vector(oracle.group())), out
    assert re.search(r"^recorded in the run: observed biased$", out, re.M), out
    assert re.search(r"^ +declared unbiased$", out, re.M), out
