"""The float64 reference network against finite differences, and its running-statistic update against the
BatchNorm oracle."""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref
from bnsuite.adapters.nets import reference_net as rn

EPS = 1e-3


def _data(arch, n=4, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rn.IN_CHANNELS, *rn.IMAGE))
    t = rng.standard_normal((n, rn.OUT_FEATURES))
    return x, t


@pytest.mark.parametrize("arch", rn.ARCHS)
def test_gradient_matches_finite_differences(arch):
    w = rn.init_weights(arch, seed=1, dtype="float64")
    x, t = _data(arch)
    net = rn.ReferenceNet(arch, w, channels_last=False, eps=EPS, momentum=0.1, estimator="unbiased")
    _, grads = net.gradients(x, t)
    assert set(grads) == set(rn.param_names(arch))
    rng = np.random.default_rng(0)
    h = 1e-6
    for key in rn.param_names(arch):
        # a few random entries per parameter; central differences, error O(h^2)
        flat = w[key].ravel()
        for idx in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            def loss_at(delta):
                w2 = {k: v.copy() for k, v in w.items()}
                w2[key].ravel()[idx] += delta  # ravel of a contiguous copy is a view
                n2 = rn.ReferenceNet(arch, w2, channels_last=False, eps=EPS, momentum=0.1, estimator="unbiased")
                return n2.loss(n2.forward(x, training=True), t)
            fd = (loss_at(h) - loss_at(-h)) / (2 * h)
            an = grads[key].ravel()[idx]
            assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (key, idx, fd, an)


def test_channels_last_input_is_the_same_network():
    arch = "conv_bn_relu_dense"
    w = rn.init_weights(arch, seed=2, dtype="float64")
    x, _ = _data(arch)
    a = rn.ReferenceNet(arch, w, channels_last=False, eps=EPS, momentum=0.1, estimator="biased")
    b = rn.ReferenceNet(arch, w, channels_last=True, eps=EPS, momentum=0.1, estimator="biased")
    np.testing.assert_allclose(b.forward(np.moveaxis(x, 1, -1), False), a.forward(x, False), rtol=0, atol=1e-14)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_sgd_step_updates_running_stats_and_weights(estimator):
    arch = "conv_bn_relu_dense"
    w = rn.init_weights(arch, seed=3, dtype="float64")
    x, t = _data(arch)
    net = rn.ReferenceNet(arch, w, channels_last=False, eps=EPS, momentum=0.1, estimator=estimator)
    loss0 = net.loss(net.forward(x, training=True), t)
    net = rn.ReferenceNet(arch, w, channels_last=False, eps=EPS, momentum=0.1, estimator=estimator)
    _, grads = net.gradients(x, t)
    loss = net.sgd_step(x, t, lr=0.1)
    assert loss == pytest.approx(loss0, rel=1e-14)
    z = rn.conv2d(x, w["conv.kernel"], w["conv.bias"])
    mean, var = ref.update_running(w["bn.mean"], w["bn.var"], ref.moments(z, 1), 0.1, estimator, step=1)
    st = net.bn_states()[0]
    np.testing.assert_allclose(st.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(st.var, var, rtol=1e-14)
    np.testing.assert_allclose(net.w["dense.kernel"], w["dense.kernel"] - 0.1 * grads["dense.kernel"], rtol=1e-14)


def test_bn_stack_has_at_least_20_batchnorms():
    assert len(rn.bn_names("bn_stack")) >= 20
