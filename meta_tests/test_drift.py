"""The drift machinery: version ranges, release-set files, and the drift view built from results files."""

import json
import os
import subprocess
import sys

import pytest

from bnsuite import drift, runner
from bnsuite.adapters.base import Cited, by_version, in_range
from bnsuite.reports import drift as view
from bnsuite.reports.results import SCHEMA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("version, spec, holds", [
    ("3.14.1", "<3.15", True), ("3.15.0", "<3.15", False), ("3.15.0", ">=3.15", True),
    ("0.12.4", ">=0.12.4", True), ("0.12.3", ">=0.12.4", False), ("0.10.2", ">=0.8,<0.11", True),
    ("0.11.0", ">=0.8,<0.11", False), ("2.13.0+cpu", "==2.13.0", True), ("1.0", "*", True),
])
def test_in_range(version, spec, holds):
    assert in_range(version, spec) is holds, f"{version} in {spec!r} should be {holds}"


def test_by_version_picks_the_installed_range_and_names_it():
    import pytest as installed  # a distribution certainly installed here

    v = installed.__version__
    got = by_version("pytest", ("<1", Cited("old", "src-old")), (">=1", Cited("new", "src-new")))
    assert got == Cited("new", "[pytest >=1] src-new"), (v, got)
    with pytest.raises(LookupError):
        by_version("pytest", ("<1", Cited("old", "src-old")))


def test_by_version_of_a_missing_distribution_is_the_newest_range():
    got = by_version("no-such-distribution-xyz", ("<1", Cited("old", "a")), (">=1", Cited("new", "b")))
    assert got.value == "new" and "not installed" in got.source


def test_every_release_set_names_known_groups():
    sets = drift.release_sets()
    assert len(sets) >= 9, sorted(sets)
    for name, (groups, path) in sets.items():
        assert groups and set(groups) <= set(runner.GROUPS), (name, groups)
    families = {name.split("-")[0] for name in sets}
    assert {"keras", "tf", "flax"} <= families, families


def _write(folder, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "g.jsonl"), "w") as fh:
        for r in records:
            fh.write(json.dumps({"schema": SCHEMA, **r}) + "\n")
        fh.write("{corrupt line\n")


def _release(tmp, name, version, observed, passed=True):
    _write(os.path.join(tmp, name), [
        {"kind": "env", "group": "flax-nnx", "adapter": "flax-nnx", "versions": {"flax": version}},
        {"kind": "declaration", "adapter": "flax-nnx", "adapter_class": "m:C",
         "declaration": {"precision": {"value": observed, "source": f"src {version}"}}},
        {"kind": "check", "adapter": "flax-nnx", "device": "cpu", "dtype": "float64",
         "test": "s/test_p.py::test_x[flax-nnx-cpu-float64]",
         "property": "precision_state_dtype_after_training", "declared": observed, "observed": observed,
         "passed": passed, "source": f"[flax range] src {version}"},
        {"kind": "check", "adapter": "flax-nnx", "device": "cpu", "dtype": "float32",
         "test": "s/test_p.py::test_y[flax-nnx-cpu-float32]",
         "property": "default_eps", "declared": 1e-5, "observed": 1e-5, "passed": True, "source": "s"},
    ])
    with open(os.path.join(tmp, name, "set.json"), "w") as fh:
        json.dump({"set": name, "groups": ["flax-nnx"], "install_s": 1.0, "tool": "uv", "error": None,
                   "run_s": 2.0}, fh)


def test_drift_view_highlights_the_change_with_its_source(tmp_path):
    _release(tmp_path, "flax-0.12", "0.12.8", "float32")
    _release(tmp_path, "flax-0.10", "0.10.2", "float64")
    _release(tmp_path, "flax-0.11", "0.11.2", "float32", passed=False)
    page, stats = view.build(str(tmp_path))
    assert stats == {"changed": 1, "failed": 1, "behaviours": 2}, stats
    # Columns in version order, the change marked on 0.11.2 with the source of its declaration.
    assert page.index("flax 0.10.2") < page.index("flax 0.11.2") < page.index("flax 0.12.8")
    assert "class='changed failed'" in page and "[flax range] src 0.11.2" in page
    assert "Declared values that differ by release" in page


def test_drift_command_rejects_an_unknown_set():
    proc = subprocess.run([sys.executable, "-m", "bnsuite", "drift", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("bnsuite: error: unknown release set 'nope': use one of ")


def test_drift_view_of_a_missing_folder_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bnsuite.reports.drift", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def _outcome_file(tmp_path, outcomes):
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps({"kind": "outcome", "outcome": o, "reason": why}) + "\n" for o, why in outcomes))
    return str(path)


def test_a_group_whose_every_case_skips_says_why_not_failed(tmp_path):
    path = _outcome_file(tmp_path, [("skipped", "Skipped: flax 0.8.5: no nnx.DiffState (arrived in flax 0.9)")] * 3
                         + [("skipped", "Skipped: another reason")])
    r = {"group": "flax-nnx", "rc": 0, "wall_s": 1.0, "counts": runner.count_outcomes(path),
         "skip_reason": runner.main_skip_reason(path)}
    line = runner.describe(r)
    assert "FAILED" not in line and " skip " in line, line
    assert line.endswith("skipped: flax 0.8.5: no nnx.DiffState (arrived in flax 0.9) (3 of 4 cases)"), line
    assert not runner.group_ok(r)  # the matrix still wants a group that passes something


@pytest.mark.parametrize("outcomes, rc", [([("skipped", "x"), ("failed", "")], 1), ([("skipped", "x")], 2), ([], 5)])
def test_a_group_with_a_failure_or_nothing_run_is_still_failed(tmp_path, outcomes, rc):
    path = _outcome_file(tmp_path, outcomes)
    r = {"group": "g", "rc": rc, "wall_s": 1.0, "counts": runner.count_outcomes(path),
         "skip_reason": runner.main_skip_reason(path)}
    assert " FAILED " in runner.describe(r), runner.describe(r)
