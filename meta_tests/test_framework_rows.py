"""The framework rows (bnsuite/adapters/frameworks.py) are the one home of per-framework facts: what cannot import
Python (tox.ini, the workflow, docs/coverage.md's adapter table, the requirements and pyproject's extras) is checked
against them, adapter by adapter; a fake adapter id gets the checklist of every piece it lacks."""

import pytest

from bnsuite.adapters import frameworks, registry
from bnsuite.adapters.base import BatchNormAdapter
from meta_tests.adapter_checklist import checklist


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_builtin_adapter_is_complete(adapter_id):
    missing = checklist(adapter_id)
    assert not missing, f"{adapter_id} lacks:\n  " + "\n  ".join(missing)


def test_rows_pin_each_distribution_once():
    assert frameworks.pins()  # raises naming a distribution pinned to two releases


class FakeAdapter(BatchNormAdapter):
    """A new framework's adapter with its module and registry line only."""

    id = "fake-fw"
    requires = ("fake_fw",)
    process_env = {"FAKE_FW_SWITCH": "1"}


def test_a_new_adapter_gets_a_checklist_of_at_most_five_files(monkeypatch):
    monkeypatch.setitem(registry.BUILTIN, "fake-fw", f"{__name__}:FakeAdapter")
    missing = checklist("fake-fw")
    files = {line.split(":")[0].split(" (")[0] for line in missing}
    assert missing, "a fake adapter with nothing but its module must lack pieces"
    for piece in ("a framework row", "docs/coverage.md", "tox.ini", ".github/workflows/conformance.yml"):
        assert any(line.startswith(piece) for line in missing), f"the checklist does not name {piece!r}: {missing}"
    assert len(files | {"module"}) <= 5, f"a new built-in adapter needs more than five files: {sorted(files)}"
    monkeypatch.setattr(FakeAdapter, "runs_on", frameworks.Framework(requires=("fake_fw",), families=(),
                                                                        pins={}), raising=False)
    assert any("the pin of fake_fw" in line for line in checklist("fake-fw"))


def test_an_unregistered_id_is_told_to_add_its_module():
    assert checklist("not-registered")[0].startswith("bnsuite/adapters/<module>.py")


class UnknownFamilyAdapter(BatchNormAdapter):
    """An adapter naming a family (a -m marker) no framework row names."""

    id = "unknown-family"
    families = ("mxnet",)


def test_an_unknown_family_marker_fails_loudly():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites", "--collect-only", "-q", "-p",
                           "no:cacheprovider", "--adapter", f"{__name__}:UnknownFamilyAdapter"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, f"exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert "names the family 'mxnet'" in proc.stderr + proc.stdout


def test_adapters_sharing_one_process_import_in_a_safe_order():
    """Plain pytest runs every adapter in one process: paddle (imported first, its row's import_first) next to an
    adapter that imports TensorFlow first must not kill the process (`import tensorflow; import paddle` segfaults)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    # One test: a case of each adapter builds its layer, so both frameworks are imported in the one process.
    proc = subprocess.run([sys.executable, "-m", "pytest",
                           "bnsuite/suites/test_defaults.py::test_default_hyperparameters", "-q", "-p",
                           "no:cacheprovider", "--results=none", "--adapter", "keras-tensorflow", "--adapter", "paddle"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    assert any(r.import_first for cls in (registry.load("paddle"),) for r in frameworks.rows_of(cls))
