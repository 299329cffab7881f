"""The sharded oracle against hand-computed values (reference.py's multi-replica functions)."""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref

# Two replicas, one channel: shard 0 = [0, 2], shard 1 = [4, 8].
X = np.array([[0.0], [2.0], [4.0], [8.0]])


def test_groups():
    assert ref.replica_groups("local", 3) == [[0], [1], [2]]
    assert ref.replica_groups("global", 3) == [[0, 1, 2]]
    assert ref.replica_groups("pairs", 4) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError):
        ref.replica_groups("nonsense", 2)


def test_forward_local_and_global_by_hand():
    local = ref.forward_train_replicas(X, (2, 2), "local", None, None, 0.0, 1)
    # shard 0: mean 1, var 1 -> [-1, 1]; shard 1: mean 6, var 4 -> [-1, 1]
    np.testing.assert_allclose(local[0][:, 0], [-1, 1])
    np.testing.assert_allclose(local[1][:, 0], [-1, 1])
    glob = ref.forward_train_replicas(X, (2, 2), "global", None, None, 0.0, 1)
    # global: mean 3.5, var (12.25 + 2.25 + 0.25 + 20.25) / 4 = 8.75
    s = np.sqrt(8.75)
    np.testing.assert_allclose(np.concatenate(glob)[:, 0], (X[:, 0] - 3.5) / s)


def test_forward_uneven_global_weights_by_count():
    glob = ref.forward_train_replicas(X, (3, 1), "global", None, None, 0.0, 1)
    assert [g.shape[0] for g in glob] == [3, 1]
    np.testing.assert_allclose(np.concatenate(glob)[:, 0], (X[:, 0] - 3.5) / np.sqrt(8.75))


def test_running_rules_by_hand():
    # momentum 0.5 from mean 0, var 1; unbiased estimator.
    loc = ref.running_replicas([X], (2, 2), "local", [0.0], [1.0], 0.5, "unbiased", 1)
    np.testing.assert_allclose([loc[0][0][0], loc[0][1][0]], [0.5, 0.5 + 0.5 * 2.0])   # shard var unbiased 2
    np.testing.assert_allclose([loc[1][0][0], loc[1][1][0]], [3.0, 0.5 + 0.5 * 8.0])   # shard var unbiased 8
    glob = ref.running_replicas([X], (2, 2), "global", [0.0], [1.0], 0.5, "biased", 1)
    for m, v in glob:
        np.testing.assert_allclose([m[0], v[0]], [1.75, 0.5 + 0.5 * 8.75])
    # broadcast0 over two steps: step 2 starts every replica from replica 0's state after step 1.
    b0 = ref.running_replicas([X, X], (2, 2), "broadcast0", [0.0], [1.0], 0.5, "unbiased", 1)
    np.testing.assert_allclose(b0[0][0][0], 0.5 * 0.5 + 0.5 * 1.0)  # 0.75
    np.testing.assert_allclose(b0[1][0][0], 0.5 * 0.5 + 0.5 * 6.0)  # 3.25, not the local 4.5
    np.testing.assert_allclose(b0[1][1][0], 0.5 * 1.5 + 0.5 * 8.0)


def test_backward_global_is_the_pooled_backward_sliced():
    dy = np.array([[1.0], [0.0], [0.0], [0.0]])
    glob = ref.backward_train_replicas(X, dy, (2, 2), "global", None, 0.0, 1)
    whole = ref.backward_train(X, dy, None, 0.0, 1)[0]
    np.testing.assert_allclose(np.concatenate(glob), whole)
    # The cross-replica terms: replica 1's dx is nonzero though its dy is zero.
    assert np.abs(glob[1]).max() > 0.01
    loc = ref.backward_train_replicas(X, dy, (2, 2), "local", None, 0.0, 1)
    np.testing.assert_allclose(loc[1], 0.0)
    # Hand value: dx_0 = (1/sigma) (dy_0 - mean(dy) - xhat_0 mean(dy xhat)) with sigma = sqrt(8.75).
    s = np.sqrt(8.75)
    xhat0 = -3.5 / s
    np.testing.assert_allclose(glob[0][0, 0], (1 - 0.25 - xhat0 * xhat0 * 0.25) / s)


def test_empty_shard_has_empty_output():
    out = ref.forward_train_replicas(X, (4, 0), "local", None, None, 0.0, 1)
    assert out[1].shape == (0, 1)
    np.testing.assert_allclose(out[0][:, 0], (X[:, 0] - 3.5) / np.sqrt(8.75))


def test_unweighted_moments_by_hand():
    # Shards [0, 2, 4] and [8]: shard means 2 and 8 -> 5 (the weighted mean is 3.5); E[x^2] = (20/3 + 64) / 2.
    mean, var = ref.unweighted_moments(ref.split_batch(X, (3, 1)), 1)
    np.testing.assert_allclose(mean, [5.0])
    np.testing.assert_allclose(var, [(20 / 3 + 64) / 2 - 25])
    y = ref.forward_train_replicas(X, (3, 1), "unweighted", None, None, 0.0, 1)
    np.testing.assert_allclose(np.concatenate(y)[:, 0], (X[:, 0] - 5.0) / np.sqrt(var[0]))
    # Equal shards: the unweighted statistics are the global ones.
    np.testing.assert_allclose(np.concatenate(ref.forward_train_replicas(X, (2, 2), "unweighted", None, None, 0.0, 1)),
                               np.concatenate(ref.forward_train_replicas(X, (2, 2), "global", None, None, 0.0, 1)))
    # An empty shard makes them NaN.
    assert np.isnan(ref.unweighted_moments(ref.split_batch(X, (4, 0)), 1)[0]).all()


def test_backward_own_loss_by_hand():
    # Replica r's own part of the loss through the global statistics: dx_i = (dy_i - sum_r(dy)/n - xhat_i
    # sum_r(dy xhat)/n) / sigma over replica r's shard only, with the global n and sigma.
    dy = np.array([[1.0], [0.0], [0.0], [2.0]])
    own = ref.backward_train_replicas(X, dy, (2, 2), "own_loss", None, 0.0, 1)
    s, xhat = np.sqrt(8.75), (X[:, 0] - 3.5) / np.sqrt(8.75)
    for r, idx in enumerate(([0, 1], [2, 3])):
        d = dy[idx, 0]
        want = (d - d.sum() / 4 - xhat[idx] * (d * xhat[idx]).sum() / 4) / s
        np.testing.assert_allclose(own[r][:, 0], want)
    # Summed over replicas' losses, the global backward: own_loss lacks exactly the cross-replica terms.
    glob = np.concatenate(ref.backward_train_replicas(X, dy, (2, 2), "global", None, 0.0, 1))
    assert np.abs(np.concatenate(own) - glob).max() > 0.01
