"""The probe on models built from the batch-independent normalization layers (LayerNorm, GroupNorm, RMSNorm,
InstanceNorm): no batch dependence; the same model with ONE BatchNorm in training mode inserted is reported, with
that layer named."""

import numpy as np
import pytest

from bnsuite.probe import find_batch_dependence
from meta_tests.probe_helpers import assert_names_planted, need

X = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32) * 3 + 1


# Each normalization reduces at least 8 values: with fewer, a set whose values nearly coincide has a variance so small
# that float32 rounding (flax's one-pass E[x^2] - E[x]^2 most of all) moves the output beyond the probe's 1e-4.
def torch_model(planted: bool):
    need("torch")
    from collections import OrderedDict

    import torch

    class TrainingBatchNorm(torch.nn.BatchNorm1d):
        """A BatchNorm left in training mode: model.eval() does not reach it."""

        def train(self, mode=True):
            return super().train(True)

    torch.manual_seed(0)
    layers = [("dense", torch.nn.Linear(4, 64)), ("layernorm", torch.nn.LayerNorm(64)),
              ("groupnorm", torch.nn.GroupNorm(4, 64)), ("rmsnorm", torch.nn.RMSNorm(64))]
    if planted:
        layers.append(("planted", TrainingBatchNorm(64)))
    layers += [("unflatten", torch.nn.Unflatten(1, (8, 8))), ("instancenorm", torch.nn.InstanceNorm1d(8, affine=True)),
               ("flatten", torch.nn.Flatten()), ("relu", torch.nn.ReLU()), ("head", torch.nn.Linear(64, 2))]
    return torch.nn.Sequential(OrderedDict(layers))


def keras_model(planted: bool):
    need("keras")
    import keras

    class TrainingBatchNorm(keras.layers.BatchNormalization):
        """A BatchNorm left in training mode. (`bn(h, training=True)` would not do: a functional model passes its own
        call's `training` to every layer, keras/src/models/functional.py: operation_fn.)"""

        def call(self, inputs, training=None, mask=None):
            return super().call(inputs, training=True, mask=mask)

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(64, name="dense")(inp)
    h = keras.layers.LayerNormalization(name="layernorm")(h)
    h = keras.layers.GroupNormalization(groups=4, name="groupnorm")(h)
    h = keras.layers.RMSNormalization(name="rmsnorm")(h)
    if planted:
        h = TrainingBatchNorm(name="planted")(h)
    h = keras.layers.Reshape((8, 8), name="reshape")(h)
    h = keras.layers.GroupNormalization(groups=-1, name="instancenorm")(h)
    h = keras.layers.ReLU(name="relu")(keras.layers.Flatten(name="flatten")(h))
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h))


def flax_model(planted: bool):
    need("flax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Net(nn.Module):
        planted: bool

        @nn.compact
        def __call__(self, x):
            x = nn.Dense(64, name="dense")(x)
            x = nn.LayerNorm(name="layernorm")(x)
            x = nn.GroupNorm(num_groups=4, name="groupnorm")(x)
            x = nn.RMSNorm(name="rmsnorm")(x)
            if self.planted:
                x = nn.BatchNorm(use_running_average=False, name="planted")(x)
            x = nn.InstanceNorm(name="instancenorm")(x.reshape(x.shape[0], 8, 8))
            return nn.Dense(2, name="head")(nn.relu(x.reshape(x.shape[0], 64)))

    net = Net(planted)
    variables = net.init(jax.random.PRNGKey(0), jnp.asarray(X))
    # a BatchNorm in training mode updates its batch_stats: the apply call must make them mutable
    return (net, variables, {"mutable": ["batch_stats"]}) if planted else (net, variables)


MODELS = {"torch": torch_model, "keras": keras_model, "flax": flax_model}


@pytest.mark.parametrize("framework", list(MODELS))
def test_norm_model_is_batch_independent(framework):
    report = find_batch_dependence(MODELS[framework](False), X)
    assert report.framework == framework
    assert report.invariant, str(report)
    assert "invariant within tolerance" in str(report)
    names = " ".join(l.name for l in report.layers)
    assert all(n in names for n in ("layernorm", "groupnorm", "rmsnorm", "instancenorm")), str(report)


@pytest.mark.parametrize("framework", list(MODELS))
def test_training_mode_batchnorm_is_named(framework):
    report = find_batch_dependence(MODELS[framework](True), X)
    assert_names_planted(report)
