"""The batch-dependence probe names exactly the planted layer, gives a clean verdict without one, and turns bad input
into one clear line (ProbeError in Python, exit 2 on the CLI)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bnsuite.probe import ProbeError, find_batch_dependence
from bnsuite.probe import __main__ as probe_main
from meta_tests.probe_helpers import assert_names_planted, need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)


# -- models --------------------------------------------------------------------------------------------------------
def torch_model(planted: bool):
    need("torch")
    import torch

    class BatchMean(torch.nn.Module):
        def forward(self, x):
            return x - x.mean(dim=0, keepdim=True)

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
    layers = [("dense", torch.nn.Linear(4, 8)), ("bn", bn)]
    if planted:
        layers.append(("planted", torch.nn.BatchNorm1d(8, track_running_stats=False)))
    layers += [("relu", torch.nn.ReLU()), ("head", torch.nn.Linear(8, 2))]
    from collections import OrderedDict

    return torch.nn.Sequential(OrderedDict(layers))


def keras_model(planted: bool):
    need("keras")
    import keras

    class BatchMean(keras.layers.Layer):
        def call(self, x):
            return x - keras.ops.mean(x, axis=0, keepdims=True)

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(8, name="dense")(inp)
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(h)
    bn.moving_mean.assign(np.linspace(-1, 1, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2, 8).astype("float32"))
    if planted:
        h = BatchMean(name="planted")(h)
    h = keras.layers.ReLU(name="relu")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h))


def flax_model(planted: bool):
    need("flax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class BatchMean(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x - jnp.mean(x, axis=0, keepdims=True)

    class Net(nn.Module):
        planted: bool

        @nn.compact
        def __call__(self, x):
            x = nn.Dense(8, name="dense")(x)
            x = nn.BatchNorm(use_running_average=True, name="bn")(x)
            if self.planted:
                x = BatchMean(name="planted")(x)
            return nn.Dense(2, name="head")(nn.relu(x))

    net = Net(planted)
    variables = net.init(jax.random.PRNGKey(0), jnp.asarray(X))
    stats = {"mean": jnp.linspace(-1, 1, 8), "var": jnp.linspace(0.5, 2, 8)}
    return net, {**variables, "batch_stats": {"bn": stats}}


MODELS = {"torch": torch_model, "keras": keras_model, "flax": flax_model}


@pytest.mark.parametrize("framework", list(MODELS))
def test_probe_names_the_planted_layer(framework):
    report = find_batch_dependence(MODELS[framework](True), X)
    assert report.framework == framework
    assert_names_planted(report)
    assert "planted" in str(report)


@pytest.mark.parametrize("framework", list(MODELS))
def test_probe_clean_verdict(framework):
    report = find_batch_dependence(MODELS[framework](False), X)
    assert report.invariant, str(report)
    assert report.first is None
    assert "invariant within tolerance" in str(report)


@pytest.mark.parametrize("framework", list(MODELS))
def test_framework_override(framework):
    report = find_batch_dependence(MODELS[framework](True), X, framework=framework, batch_sizes=(4, None))
    assert report.first.name == "planted"


KERAS_ON_JAX = textwrap.dedent("""
    import numpy as np, keras
    from bnsuite.probe import find_batch_dependence

    class BatchMean(keras.layers.Layer):
        def call(self, x):
            return x - keras.ops.mean(x, axis=0, keepdims=True)

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = BatchMean(name="planted")(keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(8, name="d")(inp)))
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    x = np.random.default_rng(0).standard_normal((16, 4)).astype("float32")
    for planted in (True, False):
        m = model if planted else keras.Model(inp, model.get_layer("bn").output)
        r = find_batch_dependence(m, x, batch_sizes=(1, 8, None))
        print(keras.backend.backend(), r.first.name if r.first else None)
""")


def test_probe_on_keras_jax_compiled_inference():
    """On the JAX backend the probe runs Keras' compiled inference (predict_on_batch), not the eager call: it still
    names the planted layer, keeps the BatchNorm before it in inference mode, and sees nothing without it."""
    need("keras")
    need("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", KERAS_ON_JAX], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["jax", "planted", "jax", "None"], proc.stdout


def _one_line_error(fn, *args, **kw):
    with pytest.raises(ProbeError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert msg and len(msg.splitlines()) == 1, msg
    return msg


def test_bad_inputs_are_one_line():
    assert "not a model" in _one_line_error(find_batch_dependence, object(), X)
    assert "unknown framework 'mxnet'" in _one_line_error(find_batch_dependence, object(), X, framework="mxnet")


@pytest.mark.parametrize("framework", list(MODELS))
def test_bad_inputs_per_framework(framework):
    model = MODELS[framework](True)
    assert "does not divide" in _one_line_error(find_batch_dependence, model, X, batch_sizes=(3, None))
    assert "not a positive integer" in _one_line_error(find_batch_dependence, model, X, batch_sizes=(0,))
    msg = _one_line_error(find_batch_dependence, model, np.zeros((16, 5), np.float32))  # wrong feature count
    assert "the model raised" in msg
    other = "keras" if framework != "keras" else "torch"
    need(other)
    __import__(other)
    _one_line_error(find_batch_dependence, model, X, framework=other)  # wrong framework override


# -- CLI -----------------------------------------------------------------------------------------------------------
# torch is imported by the factories that build a model only: the cases that fail before (a missing or raising
# factory) start no framework.
FACTORY = textwrap.dedent("""
    import numpy as np

    def model_and_x():
        import torch

        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8, track_running_stats=False),
                                torch.nn.Linear(8, 2))
        return m, np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)

    def model_only():
        return model_and_x()[0]

    def broken():
        raise RuntimeError("factory exploded")
""")


def _user_files(tmp_path):
    (tmp_path / "user_models.py").write_text(FACTORY)
    np.save(tmp_path / "bad.npy", np.zeros((16, 5), np.float32))


def cli(tmp_path, *args):
    _user_files(tmp_path)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bnsuite.probe", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_reports_planted_layer(tmp_path):
    need("torch")
    proc = cli(tmp_path, "user_models:model_and_x", "--batch-sizes", "2,8")
    assert proc.returncode == 1, proc.stderr
    assert "first batch-dependent layer: '1' (BatchNorm1d)" in proc.stdout, proc.stdout


def cli_in_process(tmp_path, monkeypatch, capsys, *args):
    """(exit status, stdout, stderr) of `python -m bnsuite.probe ARGS` from tmp_path, run by its main() in this
    process; the user's module is imported afresh and forgotten after."""
    _user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader puts the current folder first
    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    try:
        rc = probe_main.main(list(args))
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    finally:
        sys.modules.pop("user_models", None)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, out, err, message):
    __tracebackhide__ = True
    assert rc == 2, (rc, out, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


CLI_ERRORS = {  # id -> (arguments, what the one line says)
    "bad-module": (["no_such_module:f", "--input", "bad.npy"], "cannot import module 'no_such_module'"),
    "bad-factory": (["user_models:nope", "--input", "bad.npy"], "has no callable 'nope'"),
    "shape-mismatch": (["user_models:model_only", "--input", "bad.npy"], "the model raised"),
    "no-input": (["user_models:model_only"], "no input"),
    "missing-file": (["user_models:model_only", "--input", "missing.npy"], "cannot read --input"),
    "unknown-framework": (["user_models:model_and_x", "--framework", "mxnet"], "unknown framework 'mxnet'"),
    "bad-batch-size": (["user_models:model_and_x", "--batch-sizes", "3"], "does not divide"),
    "factory-raises": (["user_models:broken"], "factory exploded"),
    "bad-option": (["user_models:model_and_x", "--bogus"], "unrecognized arguments"),
}


@pytest.mark.parametrize("bad", list(CLI_ERRORS))
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, bad):
    """Each bad input through the command's main(); the command line end to end: test_cli_error_end_to_end."""
    need("torch")
    args, message = CLI_ERRORS[bad]
    assert_one_line_error(*cli_in_process(tmp_path, monkeypatch, capsys, *args), message)


def test_cli_error_end_to_end(tmp_path):
    """A bad input that imports torch and runs the model, from the command line: one line on stderr (nothing the
    interpreter or torch prints besides), exit 2."""
    need("torch")
    args, message = CLI_ERRORS["shape-mismatch"]
    proc = cli(tmp_path, *args)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, message)


# -- blocks: a softmax over the batch axis -------------------------------------------------------------------------
def test_torch_softmax_over_batch_axis_is_named():
    need("torch")
    import torch
    from collections import OrderedDict

    torch.manual_seed(0)
    model = torch.nn.Sequential(OrderedDict([("dense", torch.nn.Linear(4, 1)), ("out", torch.nn.Softmax(dim=0))]))
    report = find_batch_dependence(model, X)
    assert report.first is not None and (report.first.name, report.first.type) == ("out", "Softmax"), str(report)
    model = torch.nn.Sequential(OrderedDict([("dense", torch.nn.Linear(4, 1)), ("out", torch.nn.Softmax(dim=-1))]))
    assert find_batch_dependence(model, X).invariant
