"""What keeps the run's speed visible and its groups well scheduled: the report lists the slowest cases per group
(that each outcome record carries its seconds is checked on the broken adapters' shared run, in
meta_tests/test_broken_adapters.py), and the runner's group order and thread split come from measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bnsuite import runner, scheduling
from bnsuite.reports.render import render
from bnsuite.reports.results import ResultsWriter
from bnsuite.reports.slowest import slowest


def _group_file(path, group, seconds):
    w = ResultsWriter(str(path))
    w.write("env", group=group, python="3.11", platform="linux", argv=[], started="2026-01-01T00:00:00", env={},
            versions={}, numeric={})
    for i, s in enumerate(seconds):
        w.write("outcome", test=f"suites/test_x.py::test_{group}_{i}[a-cpu-float32]", adapter="a", device="cpu",
                dtype="float32", outcome="failed" if i == 1 else "passed", reason="", repro="", seconds=s)
    w.write("outcome", test="suites/test_x.py::test_untimed", adapter="a", device="cpu", dtype="float32",
            outcome="passed", reason="", repro="")  # an older record without seconds
    w.close()


def test_slowest_cases_per_group_in_the_report(tmp_path):
    _group_file(tmp_path / "fast.jsonl", "fast", [0.5, 0.25])
    _group_file(tmp_path / "slow.jsonl", "slow", [1.0, 9.0, 3.0, 0.1, 2.0, 4.0, 0.2])
    records = [{**json.loads(line), "_file": str(f)} for f in sorted(tmp_path.glob("*.jsonl"))
               for line in f.read_text().splitlines()]
    groups = slowest([r for r in records if r["kind"] == "outcome"], [r for r in records if r["kind"] == "env"])
    assert [g["group"] for g in groups] == ["slow", "fast"], groups  # the slowest group first
    assert groups[0]["cases"] == 7 and abs(groups[0]["seconds"] - 19.3) < 1e-9, groups[0]
    assert [c["seconds"] for c in groups[0]["slowest"]] == [9.0, 4.0, 3.0, 2.0, 1.0], groups[0]
    out = tmp_path / "index.html"
    render([str(tmp_path)], str(out))
    html = out.read_text(encoding="utf-8")
    section = html[html.index('<section id="slowest">'):]
    section = section[:section.index("</section>")]
    assert "9.00 suites/test_x.py::test_slow_1[a-cpu-float32] (failed)" in section, section
    assert "test_untimed" not in section and "0.10" not in section, section  # untimed left out, only the top 5


def test_every_group_has_a_measured_cost():
    costs = scheduling.costs()
    groups = [*runner.GROUPS, "meta", "meta-slow"]
    assert set(groups) <= set(costs), f"bnsuite/group_costs.json lacks {sorted(set(groups) - set(costs))}"
    assert all(c > 0 for c in costs.values()), costs


def test_longest_group_starts_first_and_unmeasured_before_all():
    cost = {"a": 1.0, "b": 30.0, "c": 5.0}
    assert scheduling.order(["a", "b", "c"], cost) == ["b", "c", "a"]
    assert scheduling.order([("a", 1), ("new", 2), ("b", 3)], cost) == [("new", 2), ("b", 3), ("a", 1)]


def test_threads_are_split_between_the_groups_that_run_at_once():
    cores = os.cpu_count() or 1
    assert scheduling.thread_env(2, {}) == {"OMP_NUM_THREADS": str(max(1, cores // 2))}
    assert scheduling.thread_env(cores * 4, {}) == {"OMP_NUM_THREADS": "1"}
    assert scheduling.thread_env(2, {"OMP_NUM_THREADS": "3"}) == {}  # the user's own setting stays


@pytest.mark.slow
def test_group_benchmark_splits_a_cold_group_into_imports_compilers_and_the_rest():
    """benchmarks/bench_groups.py, as the speed figures are measured: one small group, cold, with the compile clock.
    The clock must see the framework's import (a clock that hooks nothing would print zeros)."""
    bench = os.path.join(runner.ROOT, "benchmarks", "bench_groups.py")
    out = subprocess.run([sys.executable, bench, "--only", "paddle", "--cold", "--compile-clock"], cwd=runner.ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    row = [line.split() for line in out.stdout.splitlines() if line.startswith("paddle ") and len(line.split()) == 5]
    assert row, out.stdout
    cpu, imports, compilers, rest = map(float, row[-1][1:])
    assert cpu > 0 and imports > 0 and abs(cpu - imports - compilers - rest) < 0.2, out.stdout


CLOCK_PROBE = '''
import jax, numpy as np, tensorflow as tf, tinygrad
import torch._dynamo.convert_frame, torch._inductor.compile_fx, torch.export


def test_each_compiler_once():
    jax.jit(lambda x: x * 2 + 1)(np.ones(3, np.float32)).block_until_ready()
    tf.function(lambda x: x * 2)(tf.ones(3))
    (tinygrad.Tensor.ones(3) * 2 + 1).realize()
'''


@pytest.mark.slow
def test_compile_clock_hooks_every_compiler_and_clocks_them(tmp_path):
    """benchmarks/compile_clock.py hooks each framework's compiler entry points (a release that renames one drops it
    from `hooked`) and clocks what runs through them."""
    (tmp_path / "test_probe.py").write_text(CLOCK_PROBE)
    out_file = tmp_path / "clock.jsonl"
    env = {**os.environ, "BNSUITE_COMPILE_CLOCK": str(out_file), "PYTHONPATH": runner.ROOT,
           "CACHEDB": str(tmp_path / "tinygrad.db"), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "benchmarks.compile_clock", "-p",
                          "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = json.loads(out_file.read_text().splitlines()[-1])
    assert set(line["hooked"]) == {
        "jax compile events", "tinygrad.codegen.do_to_program", "torch._dynamo.convert_frame._compile",
        "torch._inductor.compile_fx._compile_fx_inner", "torch.export.export",
        "tensorflow.python.eager.polymorphic_function.tracing_compilation._create_concrete_function"}, line
    assert all(line[k] > 0 for k in ("import", "jax", "tinygrad", "tensorflow")), line
    assert line["cpu"] >= sum(line[k] for k in ("import", "jax", "tinygrad", "torch", "tensorflow")), line
