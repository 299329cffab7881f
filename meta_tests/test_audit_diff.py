"""The audit and the diff on real architectures: canonical facts and warnings of torchvision's ResNet-18, a Keras
application, the linen ResNet-18, an nnx network and TF1 models (a graph of tf.compat.v1.layers, a tf_keras model of
the V1 layer), each fact a training step can show confirmed by one; the ResNet-18 port to Keras and Flax reproduces
its outputs and a naive port is caught; broken variants (an audit that misreads a Keras or a TF1 momentum, a diff
that misses an eps mismatch, in Keras and in nnx) fail the same checks; bad input is one line and exit 2 from every
entry point (python -m bnsuite.audit / .diff, python3 -m bnsuite audit / diff).

Each real model is built once per module; only the command-line contract (one process per entry point) and the TF1
models (TF_USE_LEGACY_KERAS=1 must precede TensorFlow's import) run in their own processes."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bnsuite import cli
from bnsuite.audit import AuditError, audit
from bnsuite.audit import __main__ as audit_main
from bnsuite.audit import read as reader
from bnsuite.diff import DiffError, diff
from bnsuite.diff import __main__ as diff_main
from bnsuite.diff import core as diff_core
from bnsuite.models import images
from meta_tests import audit_models
from meta_tests.audit_helpers import check_freeze_measured, check_momentum_measured, new_statistic_weight
from meta_tests.probe_helpers import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = images(2, 3)  # NHWC


def _nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


# -- the real models, each built once -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet18():
    need("torch")
    need("torchvision")
    from bnsuite.models.torch_models import MODELS

    return MODELS.build("resnet18")


@pytest.fixture(scope="module")
def mobilenet():
    need("keras")
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def flax_port(resnet18):
    need("flax")
    from bnsuite.models import port

    return port.torch_resnet18_to_flax(resnet18)


@pytest.fixture(scope="module")
def nnx_net():
    """A conv-BN-conv-BN-dense network in flax.nnx after one statistics-collection call, in eval mode, and a port of
    it that kept Keras' eps (every weight and statistic copied)."""
    need("flax")
    from flax import nnx

    model = audit_models.nnx_net()
    model(X)
    model.eval()
    naive = audit_models.nnx_net(eps=1e-3)
    nnx.update(naive, nnx.state(model))
    naive.eval()
    return model, naive


@pytest.fixture(scope="module")
def torch_to_nnx():
    """A torch network, its nnx port with the suite's conversion, and a naive one (nnx's default momentum)."""
    need("flax")
    need("torch")
    net = audit_models.torch_net(_nchw(X))
    return net, audit_models.torch_to_nnx(net), audit_models.torch_to_nnx(net, naive=True)


@pytest.fixture(scope="module")
def tf1():
    """The TF1 models' audits, diffs and one measured training step, from their own process (meta_tests/
    tf1_audit_run.py)."""
    need("tensorflow")
    need("tf_keras")
    env = {**{k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}, "TF_USE_LEGACY_KERAS": "1"}
    proc = subprocess.run([sys.executable, "-m", "meta_tests.tf1_audit_run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "\nJSON " in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("\nJSON ", 1)[1])


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


def check_naive_eps_port(report):
    """A port that kept Keras' eps 1e-3 for a 1e-5 source: every layer is told to change it, and nothing else."""
    __tracebackhide__ = True
    assert not report.matches, str(report)
    assert all(l.changes == ["eps 0.001 -> 1e-05 (eps is copied unchanged: it is added to the variance in every "
                             "framework)"] for l in report.layers), str(report)
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


def test_audit_keras_application_momentum_and_freeze(mobilenet):
    import keras

    report = audit(mobilenet)
    assert len(report.layers) == 52, str(report)
    check_keras_momentum(report)
    assert all(not l.stats_still for l in report.layers)
    bn = [l for l in mobilenet.layers if isinstance(l, keras.layers.BatchNormalization)][1]
    bn.momentum = 0.1  # a torch momentum copied as is
    mobilenet.trainable = False
    try:
        report = audit(mobilenet)
    finally:
        bn.momentum = 0.999
        mobilenet.trainable = True
    assert all(l.stats_still and l.frozen for l in report.layers), str(report)
    assert [(w.layer, w.kind) for w in report.warnings] == [(bn.name, "ported momentum")], str(report)


def test_broken_audit_misreading_keras_momentum_is_caught(mobilenet, monkeypatch):
    """An audit that takes Keras' momentum as the canonical one fails check_keras_momentum."""
    monkeypatch.setattr(reader, "_canonical", lambda weights, native: native)
    with pytest.raises(AssertionError):
        check_keras_momentum(audit(mobilenet))


def test_audit_flax_linen_resnet18(flax_port):
    report = audit(flax_port, X)
    assert len(report.layers) == 20 and not report.warnings, str(report)
    assert all(l.momentum == pytest.approx(0.1) and l.mode == "inference" for l in report.layers)


def test_audit_nnx_facts_confirmed_by_a_training_call(nnx_net):
    from flax import nnx

    model, _ = nnx_net
    report = audit(model, X)
    assert [l.name for l in report.layers] == ["bn1", "bn2"] and not report.warnings, str(report)
    assert all((l.eps, l.momentum_native, l.channel_axis, l.estimator, l.mode, l.stats_still) ==
               (1e-5, 0.99, -1, "biased", "inference", True) for l in report.layers), str(report)
    twin = nnx.clone(model)
    twin.train()
    trained = audit(twin, X)
    assert all(l.mode == "training" and not l.stats_still for l in trained.layers), str(trained)
    m0 = np.asarray(twin.bn1.mean[...])
    twin(X)  # one training-mode call: the running statistics move by the audited weight
    measured = {"bn1": {"stats_moved": True, **new_statistic_weight(m0, twin.bn1.mean[...], twin.conv1(X))}}
    check_momentum_measured([trained.layers[0].facts()], measured)
    twin.bn2.momentum = 0.1  # a torch momentum copied as is
    assert [(w.layer, w.kind) for w in audit(twin, X).warnings] == [("bn2", "ported momentum")]


def test_audit_tf1_graph_facts_confirmed_by_a_train_op(tf1):
    """A train op built the documented way moves exactly the statistics and scales the audit says it does, by the
    audited momentum; the TF1 freeze traps are warned about."""
    got = tf1["tf1_graph"]
    layers, measured = got["audit"]["layers"], got["measured"]
    assert [l["name"] for l in layers] == ["bn_a", "bn_b", "bn_c", "bn_d", "bn_e"], got["text"]
    check_momentum_measured(layers, measured)
    check_freeze_measured(layers, measured)
    assert [(l["eps"], l["estimator"], l["channel_axis"]) for l in layers] == [(1e-5, "unbiased", -1)] * 5
    assert layers[1]["mode"] == "follows is_training:0" and layers[3]["mode"] == "training", got["text"]
    warnings = {tuple(w) for w in got["audit"]["warnings"]}
    assert {("bn_b", "ported momentum"), ("bn_c", "trainable=False ignored"),
            ("bn_d", "frozen but batch statistics"), ("bn_e", "frozen but moving")} <= warnings, got["text"]
    assert not any(w[0] == "bn_d" and w[1] == "frozen but moving" for w in warnings), got["text"]


def test_broken_audit_misreading_tf1_momentum_is_caught(tf1):
    """An audit that reads the graph's momentum constant as the weight of the new statistic fails
    check_momentum_measured."""
    with pytest.raises(AssertionError):
        check_momentum_measured(tf1["tf1_graph"]["broken_audit"]["layers"], tf1["tf1_graph"]["measured"])


def test_audit_tf1_keras_v1_layer_facts_confirmed_by_fit(tf1):
    """The V1 Keras layer frozen with trainable=False keeps its statistics under fit() but normalizes with batch
    statistics; the audit says both and warns."""
    got = tf1["v1_keras"]
    layers, measured = got["audit"]["layers"], got["measured"]
    assert [(l["name"], l["type"]) for l in layers] == [("bn_frozen", "BatchNormalization (V1)"),
                                                        ("bn_trained", "BatchNormalization (V1)")], got["text"]
    check_freeze_measured(layers, measured)
    assert layers[0]["mode"].startswith("training") and measured["bn_frozen"]["training_differs_from_inference"]
    assert {("bn_frozen", "frozen but batch statistics"), ("bn_trained", "ported momentum")} <= \
           {tuple(w) for w in got["audit"]["warnings"]}, got["text"]


# -- diff ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_ports(resnet18):
    """torchvision's ResNet-18 ported to Keras with the suite's conversion, and naively (Keras' defaults kept)."""
    need("keras")
    from bnsuite.models import port

    return port.torch_resnet18_to_keras(resnet18), port.torch_resnet18_to_keras(resnet18, naive=True)


def test_port_to_keras_reproduces_and_naive_port_is_caught(resnet18, keras_ports):
    report = diff(resnet18, keras_ports[0], _nchw(X))
    assert report.matches, str(report)
    assert report.output_max_abs <= report.output_tol
    check_naive_keras_port(diff(resnet18, keras_ports[1], _nchw(X)))


def test_broken_diff_missing_eps_is_caught(resnet18, keras_ports, monkeypatch):
    """A diff that compares eps with a loose tolerance (1e-3 == 1e-5) fails check_naive_keras_port at the first
    layer, whose changes lack the eps, before any output comparison (so the outputs are not run)."""
    real_isclose = np.isclose
    monkeypatch.setattr(diff_core.np, "isclose", lambda a, b, rtol=1e-5, atol=1e-8: real_isclose(a, b, atol=1e-2))
    with pytest.raises(AssertionError, match=r"\('bn1', \[\"momentum 0\.99 -> 0\.9 [^\]]*\]\)"):
        check_naive_keras_port(diff(resnet18, keras_ports[1]))


def test_port_to_flax_reproduces_and_naive_momentum_is_caught(resnet18, flax_port):
    from bnsuite.models import port

    report = diff(resnet18, flax_port, _nchw(X))
    assert report.matches, str(report)
    naive = diff(resnet18, port.torch_resnet18_to_flax(resnet18, naive=True), _nchw(X))
    # Flax's default eps is torch's: the outputs agree, the momentum (0.99 for 0.9) is what the diff must name.
    assert naive.output_max_abs <= naive.output_tol and not naive.matches, str(naive)
    assert all(l.changes == [l.changes[0]] and l.changes[0].startswith("momentum 0.99 -> 0.9")
               for l in naive.layers), str(naive)


def test_diff_nnx_port_matches_and_eps_mismatch_is_caught(nnx_net):
    from flax import nnx

    model, naive = nnx_net
    assert diff(model, nnx.clone(model), X).matches
    check_naive_eps_port(diff(model, naive, X))


def test_port_torch_to_nnx_reproduces_and_naive_momentum_is_caught(torch_to_nnx):
    net, port, naive = torch_to_nnx
    report = diff(net, port, _nchw(X))  # the input in torch's layout, moved to nnx's channel axis by the diff
    assert report.matches and report.output_max_abs <= report.output_tol, str(report)
    naive_report = diff(net, naive, _nchw(X))
    assert naive_report.output_max_abs <= naive_report.output_tol and not naive_report.matches, str(naive_report)
    assert all(l.changes == ["momentum 0.99 -> 0.9 (the source's 0.1 weights the new term, the target's momentum "
                             "the old one: 1 - 0.1)"] for l in naive_report.layers), str(naive_report)


def test_broken_diff_missing_nnx_eps_is_caught(nnx_net, monkeypatch):
    """A diff that compares eps with a loose tolerance misses the nnx port's eps and fails check_naive_eps_port."""
    model, naive = nnx_net
    real_isclose = np.isclose
    monkeypatch.setattr(diff_core.np, "isclose", lambda a, b, rtol=1e-5, atol=1e-8: real_isclose(a, b, atol=1e-2))
    with pytest.raises(AssertionError):
        check_naive_eps_port(diff(model, naive, X))


def test_diff_tf1_graph_twin_matches_and_eps_mismatch_is_caught(tf1):
    got = tf1["tf1_graph"]["diff"]
    assert got["twin"]["matches"], got["twin"]["text"]
    naive = got["naive_eps"]
    assert not naive["matches"] and naive["changes"][3][0].startswith("eps 0.001 -> 1e-05"), naive["text"]
    assert naive["changes"][:3] + naive["changes"][4:] == [[]] * 4 and naive["out"][0] > naive["out"][1], \
        naive["text"]


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
    wider = copy.deepcopy(resnet18)
    wider.bn1 = torch.nn.BatchNorm2d(32)
    with pytest.raises(DiffError, match="layer 0 does not match: source 'bn1' has 64 channels, target 'bn1' 32"):
        diff(resnet18, wider)
    for e in (AuditError, DiffError):
        assert "\n" not in str(e("x"))


BAD_FILES = {"broken_model.py": "def make(:\n", "no_bn.py": "import torch\n\ndef make():\n    return "
             "torch.nn.Linear(3, 2)\n", "not_a_model.py": "def make():\n    return {'weights': 1}\n"}
BAD_CASES = {  # id -> (tool, arguments, what the one line says)
    "audit-file-does-not-import": ("audit", ["{d}/broken_model.py:make"], "cannot import module"),
    "audit-no-batchnorm": ("audit", ["{d}/no_bn.py:make"], "no BatchNorm layer"),
    "audit-not-a-model": ("audit", ["{d}/not_a_model.py:make"], "not a model: builtins.dict"),
    "audit-no-factory": ("audit", ["no-colon"], "must look like 'module:factory'"),
    "audit-no-argument": ("audit", [], "the following arguments are required"),
    "audit-unknown-option": ("audit", ["{d}/no_bn.py:make", "--jsn"], "unrecognized arguments: --jsn"),
    "diff-file-does-not-import": ("diff", ["{d}/broken_model.py:make", "{d}/no_bn.py:make"], "cannot import module"),
    "diff-no-batchnorm": ("diff", ["{d}/no_bn.py:make", "{d}/no_bn.py:make"], "no BatchNorm layer in the source"),
    "diff-not-a-model": ("diff", ["{d}/not_a_model.py:make", "{d}/no_bn.py:make"], "not a model: builtins.dict"),
    "diff-one-model": ("diff", ["{d}/no_bn.py:make"], "the following arguments are required"),
}
GOOD_MODEL = ("import torch\n\ndef make():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, "
              "1), torch.nn.BatchNorm2d(4, momentum=0.9)), torch.ones(2, 3, 4, 4)\n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for name, text in {**BAD_FILES, "good.py": GOOD_MODEL}.items():
        (d / name).write_text(text)
    return d


def _in_process(entry: str, tool: str, argv: list[str]) -> int:
    """The exit status of `python -m bnsuite.<tool> ARGV` (entry "module") or `python3 -m bnsuite <tool> ARGV`
    (entry "subcommand"), run in this process."""
    try:
        if entry == "module":
            return {"audit": audit_main, "diff": diff_main}[tool].main(argv)
        return cli.main([tool, *argv])
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("entry", ["module", "subcommand"])
@pytest.mark.parametrize("bad", list(BAD_CASES))
def test_bad_input_is_one_line_from_each_entry_point(entry, bad, model_dir, capsys):
    need("torch")
    tool, args, message = BAD_CASES[bad]
    rc = _in_process(entry, tool, [a.format(d=model_dir) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{tool}: error: ") and message in err, err


def check_audit_output(rc: int, out: str, as_json: bool):
    """The good model's audit: one layer, a ported-momentum warning, exit 1 (warnings)."""
    __tracebackhide__ = True
    assert rc == 1, out
    if as_json:
        got = json.loads(out)
        assert got["layers"][0]["momentum"] == 0.9 and got["warnings"][0]["kind"] == "ported momentum", out
    else:
        assert out.startswith("bnsuite audit: torch model, 1 BatchNorm layers") and "[ported momentum]" in out, out


def check_diff_output(rc: int, out: str, as_json: bool):
    """The good model against itself: MATCH, exit 0."""
    __tracebackhide__ = True
    assert rc == 0, out
    assert json.loads(out)["matches"] is True if as_json else out.rstrip().endswith("MATCH"), out


CHECKS = {"audit": check_audit_output, "diff": check_diff_output}


@pytest.mark.parametrize("entry", ["module", "subcommand"])
@pytest.mark.parametrize("tool", ["audit", "diff"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_report_from_each_entry_point(entry, tool, as_json, model_dir, capsys):
    need("torch")
    models = [f"{model_dir}/good.py:make"] * (1 if tool == "audit" else 2)
    rc = _in_process(entry, tool, models + (["--json"] if as_json else []))
    CHECKS[tool](rc, capsys.readouterr().out, as_json)


COMMAND_LINES = {  # one process per entry point: the command line end to end, a report or a bad-input line
    "python -m bnsuite.audit": ["-m", "bnsuite.audit", "{d}/good.py:make", "--json"],
    "python -m bnsuite.diff": ["-m", "bnsuite.diff", "{d}/broken_model.py:make", "{d}/good.py:make"],
    "python3 -m bnsuite audit": ["-m", "bnsuite", "audit", "{d}/broken_model.py:make"],
    "python3 -m bnsuite diff": ["-m", "bnsuite", "diff", "{d}/good.py:make", "{d}/good.py:make"],
}


@pytest.mark.parametrize("entry", list(COMMAND_LINES))
def test_command_line_contract(entry, model_dir):
    need("torch")
    args = [a.format(d=model_dir) for a in COMMAND_LINES[entry]]
    tool = "audit" if "audit" in entry else "diff"
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if "broken_model" in " ".join(args):
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"{tool}: error: cannot import") and "SyntaxError" in proc.stderr, proc.stderr
    else:
        CHECKS[tool](proc.returncode, proc.stdout, "--json" in args)
