"""The float64 oracle of the normalization layers against small hand-computed cases."""

import numpy as np
import pytest

from bnsuite.adapters.norms import reference as nref


def test_layer_norm_by_hand():
    # one sample [1, 3]: mean 2, biased var 1 -> [-1, 1]; scale [2, 3], offset [0.5, 0]
    y = nref.layer_norm(np.array([[1.0, 3.0]]), eps=0.0, scale=np.array([2.0, 3.0]), offset=np.array([0.5, 0.0]))
    assert y.tolist() == [[-1.5, 3.0]]


def test_layer_norm_is_per_sample():
    # the second sample (a huge one) must not change the first
    x = np.array([[1.0, 3.0], [100.0, 500.0]])
    assert nref.layer_norm(x, 0.0)[0].tolist() == [-1.0, 1.0]


def test_layer_norm_eps_inside_the_root():
    y = nref.layer_norm(np.array([[1.0, 3.0]]), eps=3.0)  # (x - 2) / sqrt(1 + 3)
    assert y.tolist() == [[-0.5, 0.5]]


def test_rms_norm_by_hand():
    # [3, 4]: mean square 12.5 -> x / sqrt(12.5 + 3.5) = x / 4; no centering
    y = nref.rms_norm(np.array([[3.0, 4.0]]), eps=3.5, scale=np.array([1.0, 2.0]))
    assert y.tolist() == [[0.75, 2.0]]


def test_group_norm_contiguous_vs_strided_by_hand():
    # one sample, 4 channels, no spatial axis, 2 groups
    x = np.array([[1.0, 3.0, 10.0, 30.0]])
    contiguous = nref.group_norm(x, 2, 0.0, channel_axis=1)  # groups {1, 3}, {10, 30}
    assert contiguous.tolist() == [[-1.0, 1.0, -1.0, 1.0]]
    strided = nref.group_norm(x, 2, 0.0, channel_axis=1, layout="strided")  # groups {1, 10}, {3, 30}
    assert strided.tolist() == [[-1.0, -1.0, 1.0, 1.0]]


def test_group_norm_channels_last_equals_channels_first():
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 4))
    scale, offset = np.arange(1.0, 7.0), np.arange(6.0) / 10
    first = nref.group_norm(x, 3, 1e-3, scale, offset, channel_axis=1)
    last = nref.group_norm(np.moveaxis(x, 1, -1), 3, 1e-3, scale, offset, channel_axis=-1)
    np.testing.assert_allclose(np.moveaxis(last, -1, 1), first, rtol=0, atol=1e-12)


def test_group_norm_reduces_spatial_axes_too():
    # one sample, 2 channels in one group, spatial length 2: values {0, 2, 4, 6}: mean 3, var 5
    x = np.array([[[0.0, 2.0], [4.0, 6.0]]])  # (N=1, C=2, L=2)
    y = nref.group_norm(x, 1, 0.0, channel_axis=1)
    np.testing.assert_allclose(y, (x - 3.0) / np.sqrt(5.0), rtol=0, atol=1e-15)


def test_instance_norm_by_hand():
    # (N=1, C=2, L=2): channel 0 [1, 3] -> [-1, 1]; channel 1 [5, 5] -> 0 (variance 0, eps 1)
    y = nref.instance_norm(np.array([[[1.0, 3.0], [5.0, 5.0]]]), eps=1.0, channel_axis=1)
    np.testing.assert_allclose(y, [[[-1 / np.sqrt(2), 1 / np.sqrt(2)], [0.0, 0.0]]], rtol=0, atol=1e-15)


def test_instance_norm_running_by_hand():
    y = nref.instance_norm_running(np.array([[[4.0, 6.0]]]), np.array([2.0]), np.array([3.0]), 1.0, channel_axis=1)
    assert y.tolist() == [[[1.0, 2.0]]]  # (x - 2) / sqrt(4)


def test_rows_match_the_normalized_sets():
    x = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)  # (N, C=4, L=3)
    rows = nref.rows(x, "group", channel_axis=1, groups=2)
    assert rows.shape == (4, 6)
    assert sorted(rows[0].tolist()) == [0, 1, 2, 3, 4, 5]  # sample 0, channels 0-1
    assert sorted(rows[3].tolist()) == list(range(18, 24))  # sample 1, channels 2-3
    assert nref.rows(x, "layer").shape == (8, 3)
    assert nref.rows(x, "layer", axes="non-batch").shape == (2, 12)


def test_unknown_names_raise():
    with pytest.raises(ValueError):
        nref.forward("batch", np.zeros((1, 2)), 0.0)
    with pytest.raises(ValueError):
        nref.group_of(4, 2, "random")


def test_scaled_by_variance_is_not_centered():
    # [1, 3]: biased var 1 -> x / sqrt(1 + 3) = x / 2, no mean subtracted (Keras' rms_scaling)
    assert nref.scaled_by_variance(np.array([[1.0, 3.0]]), eps=3.0).tolist() == [[0.5, 1.5]]
