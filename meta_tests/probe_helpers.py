"""What the probe's meta tests (test_probe.py, test_probe_norms.py) share: skipping a framework that is not
installed, and the verdict on a model with one planted batch-dependent layer."""

import importlib.util

import pytest


def need(module: str) -> None:
    """Skip the test when `module` is not installed."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def assert_names_planted(report) -> None:
    """The probe names the layer called "planted" as the first batch-dependent one, clearly batch-dependent, and
    every layer before it invariant within the probe's tolerance."""
    __tracebackhide__ = True
    assert report.first is not None, str(report)
    assert report.first.name == "planted", str(report)
    assert report.first.max_rel > 0.1, str(report)
    before = [l for l in report.layers if l.index < report.first.index]
    assert before and all(l.max_rel <= report.tol for l in before), str(report)
