"""The audit and the diff on real architectures: canonical facts and warnings of torchvision's ResNet-18, a Keras
application and the linen ResNet-18; the ResNet-18 port to Keras and Flax reproduces its outputs and a naive port is
caught; broken variants (an audit that misreads a Keras momentum, a diff that misses an eps mismatch) fail the same
checks; bad input is one line and a non-zero exit."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bnsuite.audit import AuditError, audit
from bnsuite.audit import read as reader
from bnsuite.diff import DiffError, diff
from bnsuite.diff import core as diff_core
from bnsuite.models import images
from meta_tests.probe_helpers import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = images(2, 3)  # NHWC


@pytest.fixture(scope="module")
def resnet18():
    need("torch")
    need("torchvision")
    from bnsuite.models.torch_models import MODELS

    return MODELS.build("resnet18")


def _nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


# -- checks, shared by the real audit/diff and their broken variants ------------------------------------------------
def check_keras_momentum(report):
    """Keras' momentum weighs the old value: its native 0.99 / 0.999 is canonical 0.01 / 0.001."""
    __tracebackhide__ = True
    for l in report.layers:
        assert l.momentum_weights == "old", l.facts()
        assert l.momentum == pytest.approx(1 - l.momentum_native), l.facts()
        assert l.momentum < 0.5, f"{l.name}: canonical momentum {l.momentum} (native {l.momentum_native})"


def check_naive_keras_port(report):
    """A naive Keras port keeps eps 1e-3 and momentum 0.99: every layer is told to change both."""
    __tracebackhide__ = True
    assert not report.matches, str(report)
    for l in report.layers:
        assert any(c.startswith("eps 0.001 -> 1e-05") for c in l.changes), (l.source, l.changes)
        assert any(c.startswith("momentum 0.99 -> 0.9") for c in l.changes), (l.source, l.changes)
    assert report.output_max_abs > report.output_tol, str(report)


# -- audit ---------------------------------------------------------------------------------------------------------
def test_audit_torch_resnet18_facts_and_warnings(resnet18):
    import torch

    report = audit(resnet18, _nchw(X))
    assert len(report.layers) == 20 and not report.warnings, str(report)
    assert report.layers[0].name == "bn1" and report.layers[-1].name == "layer4.1.bn2"
    l0 = report.layers[0]
    assert (l0.eps, l0.momentum, l0.channel_axis, l0.estimator, l0.mode, l0.stats_still) == \
           (1e-5, 0.1, 1, "unbiased", "inference", True)
    # The torch "freeze" most tutorials show: requires_grad_(False), then model.train() for the next epoch.
    for p in resnet18.parameters():
        p.requires_grad_(False)
    resnet18.train()
    bns = [m for m in resnet18.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bns[5].eval()
    bns[7].momentum = 0.9
    try:
        report = audit(resnet18, _nchw(X))
    finally:
        for p in resnet18.parameters():
            p.requires_grad_(True)
        bns[7].momentum = 0.1
        resnet18.eval()
    kinds = {(w.layer, w.kind) for w in report.warnings}
    moving = {w.layer for w in report.warnings if w.kind == "frozen but moving"}
    assert len(moving) == 19 and report.layers[5].name not in moving, str(report)
    assert (report.layers[5].name, "odd mode") in kinds, str(report)
    assert (report.layers[7].name, "ported momentum") in kinds, str(report)


def test_audit_keras_application_momentum_and_freeze():
    need("keras")
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    report = audit(base)
    assert len(report.layers) == 52, str(report)
    check_keras_momentum(report)
    assert all(not l.stats_still for l in report.layers)
    bn = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)][1]
    bn.momentum = 0.1  # a torch momentum copied as is
    base.trainable = False
    report = audit(base)
    bn.momentum = 0.999
    assert all(l.stats_still and l.frozen for l in report.layers), str(report)
    assert [(w.layer, w.kind) for w in report.warnings] == [(bn.name, "ported momentum")], str(report)


def test_audit_flax_resnet18():
    need("flax")
    from bnsuite.models.flax_models import MODELS

    model = MODELS.probe_target(MODELS.build("resnet18"))
    report = audit(model, X)
    assert len(report.layers) == 20 and not report.warnings, str(report)
    assert all(l.momentum == pytest.approx(0.1) and l.mode == "inference" for l in report.layers)


def test_broken_audit_misreading_keras_momentum_is_caught(monkeypatch):
    """An audit that takes Keras' momentum as the canonical one fails check_keras_momentum."""
    need("keras")
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    monkeypatch.setattr(reader, "_canonical", lambda weights, native: native)
    with pytest.raises(AssertionError):
        check_keras_momentum(audit(base))


# -- diff ----------------------------------------------------------------------------------------------------------
def test_port_to_keras_reproduces_and_naive_port_is_caught(resnet18):
    need("keras")
    from bnsuite.models import port

    report = diff(resnet18, port.torch_resnet18_to_keras(resnet18), _nchw(X))
    assert report.matches, str(report)
    assert report.output_max_abs <= report.output_tol
    check_naive_keras_port(diff(resnet18, port.torch_resnet18_to_keras(resnet18, naive=True), _nchw(X)))


def test_broken_diff_missing_eps_is_caught(resnet18, monkeypatch):
    """A diff that compares eps with a loose tolerance (1e-3 == 1e-5) fails check_naive_keras_port."""
    need("keras")
    from bnsuite.models import port

    real_isclose = np.isclose
    monkeypatch.setattr(diff_core.np, "isclose", lambda a, b, rtol=1e-5, atol=1e-8: real_isclose(a, b, atol=1e-2))
    with pytest.raises(AssertionError):
        check_naive_keras_port(diff(resnet18, port.torch_resnet18_to_keras(resnet18, naive=True), _nchw(X)))


def test_port_to_flax_reproduces_and_naive_momentum_is_caught(resnet18):
    need("flax")
    from bnsuite.models import port

    report = diff(resnet18, port.torch_resnet18_to_flax(resnet18), _nchw(X))
    assert report.matches, str(report)
    naive = diff(resnet18, port.torch_resnet18_to_flax(resnet18, naive=True), _nchw(X))
    # Flax's default eps is torch's: the outputs agree, the momentum (0.99 for 0.9) is what the diff must name.
    assert naive.output_max_abs <= naive.output_tol and not naive.matches, str(naive)
    assert all(l.changes == [l.changes[0]] and l.changes[0].startswith("momentum 0.99 -> 0.9")
               for l in naive.layers), str(naive)


# -- bad input -----------------------------------------------------------------------------------------------------
def test_bad_input_is_one_line(resnet18):
    import torch

    with pytest.raises(AuditError, match="no BatchNorm layer"):
        audit(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    with pytest.raises(AuditError, match="not a model: builtins.dict"):
        audit({"weights": 1})
    fewer = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.BatchNorm2d(64))
    with pytest.raises(DiffError, match="source has 20 BatchNorm layers and the target 1"):
        diff(resnet18, fewer, _nchw(X))
    import copy

    wider = copy.deepcopy(resnet18)
    wider.bn1 = torch.nn.BatchNorm2d(32)
    with pytest.raises(DiffError, match="layer 0 does not match: source 'bn1' has 64 channels, target 'bn1' 32"):
        diff(resnet18, wider)
    for e in (AuditError, DiffError):
        assert "\n" not in str(e("x"))


@pytest.mark.parametrize("tool,args", [("audit", ["{f}:make"]), ("diff", ["{f}:make", "{f}:make"])])
def test_cli_file_that_does_not_import(tool, args, tmp_path):
    f = tmp_path / "broken_model.py"
    f.write_text("def make(:\n")
    proc = subprocess.run([sys.executable, "-m", f"bnsuite.{tool}", *[a.format(f=f) for a in args]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"{tool}: error: cannot import" in proc.stderr, proc.stderr
    assert "SyntaxError" in proc.stderr


def test_cli_audit_text_and_json(tmp_path):
    need("torch")
    f = tmp_path / "model.py"
    f.write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), "
                 "torch.nn.BatchNorm2d(4, momentum=0.9))\n")
    proc = subprocess.run([sys.executable, "-m", "bnsuite.audit", f"{f}:make", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # a warning: the momentum
    import json

    out = json.loads(proc.stdout)
    assert out["layers"][0]["momentum"] == 0.9 and out["warnings"][0]["kind"] == "ported momentum"
