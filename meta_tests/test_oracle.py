"""The float64 oracle against small hand-computed cases."""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref


def test_moments_by_hand():
    # channel 0: [1, 2, 3, 6] -> mean 3, squared deviations 4+1+0+9 = 14
    x = np.array([[1.0], [2.0], [3.0], [6.0]])
    m = ref.moments(x, axis=1)
    assert m.n == 4 and m.mean[0] == 3.0
    assert m.var_biased[0] == 14 / 4 and m.var_unbiased[0] == 14 / 3


def test_forward_train_by_hand():
    x = np.array([[1.0], [3.0]])  # mean 2, biased var 1
    y, _ = ref.forward_train(x, scale=np.array([2.0]), offset=np.array([0.5]), eps=0.0, axis=1)
    assert y.ravel().tolist() == [-1.5, 2.5]


def test_forward_inference_uses_running_stats():
    x = np.array([[4.0]])
    y = ref.forward_inference(x, np.array([1.0]), np.array([0.0]), np.array([2.0]), np.array([3.0]), 1.0, 1)
    assert y[0, 0] == pytest.approx(1.0)  # (4 - 2) / sqrt(3 + 1)


def test_channel_axis_last_and_first_agree():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    y_first, _ = ref.forward_train(x, None, None, 1e-3, 1)
    y_last, _ = ref.forward_train(np.moveaxis(x, 1, -1), None, None, 1e-3, -1)
    np.testing.assert_allclose(np.moveaxis(y_last, -1, 1), y_first, rtol=0, atol=1e-15)


def test_update_running_momentum_weights_new_statistic():
    x = np.array([[1.0], [3.0]])  # mean 2, biased var 1, unbiased var 2
    m = ref.moments(x, 1)
    mean, var = ref.update_running(np.array([0.0]), np.array([1.0]), m, 0.1, "unbiased", step=1)
    assert mean[0] == pytest.approx(0.2) and var[0] == pytest.approx(0.9 * 1 + 0.1 * 2)
    mean, var = ref.update_running(np.array([0.0]), np.array([1.0]), m, 0.1, "biased", step=1)
    assert var[0] == pytest.approx(1.0)


def test_cumulative_average_is_plain_mean_of_batches():
    batches = [np.array([[0.0], [2.0]]), np.array([[4.0], [6.0]]), np.array([[8.0], [10.0]])]
    mean, var = ref.train_steps(batches, np.array([100.0]), np.array([100.0]), None, "unbiased", 1)
    assert mean[0] == pytest.approx(5.0)  # mean of 1, 5, 9; the initial state gets weight 0
    assert var[0] == pytest.approx(2.0)  # each batch has unbiased variance 2


def test_single_value_unbiased_is_nan_not_an_error():
    m = ref.moments(np.array([[5.0, 7.0]]), 1)
    assert m.var_biased.tolist() == [0.0, 0.0] and np.isnan(m.var_unbiased).all()


def test_backward_train_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, dy, g = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), np.array([1.5, 0.7])
    b = np.array([0.1, -0.2])
    dx, dg, db = ref.backward_train(x, dy, g, 1e-3, 1)
    f = lambda x_, g_, b_: float((ref.forward_train(x_, g_, b_, 1e-3, 1)[0] * dy).sum())
    h = 1e-6
    num_dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num_dx[i] = (f(x + e, g, b) - f(x - e, g, b)) / (2 * h)
    np.testing.assert_allclose(dx, num_dx, atol=1e-7)
    np.testing.assert_allclose(db, dy.sum(0), atol=1e-12)
    np.testing.assert_allclose(dg[0], (f(x, g + [h, 0], b) - f(x, g - [h, 0], b)) / (2 * h), atol=1e-7)


def test_backward_inference_is_affine_gradient():
    x, dy = np.array([[1.0], [2.0]]), np.array([[1.0], [1.0]])
    dx, dg, db = ref.backward_inference(x, dy, np.array([2.0]), np.array([0.0]), np.array([4.0]), 0.0, 1)
    assert dx.ravel().tolist() == [1.0, 1.0] and db[0] == 2.0 and dg[0] == pytest.approx(1.5)  # xhat = [0.5, 1]
