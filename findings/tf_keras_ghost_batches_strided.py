"""tf_keras BatchNormalization(virtual_batch_size=k): the ghost batches are NOT contiguous blocks of k samples. The
layer reshapes the batch to [k, N/k, ...] and normalizes over the first axis, so ghost batch b holds samples
b, b + N/k, b + 2N/k, ... (strided). With batches grouped by source (e.g. concatenated per-domain halves), each ghost
batch mixes the groups instead of keeping them apart."""

import sys

try:
    import numpy as np
    import tf_keras
    print(f"versions: tf_keras {tf_keras.__version__}, tensorflow {sys.modules['tensorflow'].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype("float32")
    x[4:] += 10.0  # two groups of 4 samples, as a per-domain batch would be
    bn = tf_keras.layers.BatchNormalization(virtual_batch_size=4, epsilon=1e-3)
    y = bn(x, training=True).numpy()
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)


def ghost(groups):  # the float64 oracle with the ghost batches given as lists of sample indices
    out = np.empty_like(x, dtype=np.float64)
    for g in groups:
        out[g] = (x[g] - x[g].mean(0)) / np.sqrt(x[g].var(0) + 1e-3)
    return out


contiguous = ghost([np.arange(0, 4), np.arange(4, 8)])
strided = ghost([np.arange(0, 8, 2), np.arange(1, 8, 2)])
print(f"observed y[0] = {y[0]}")
print(f"expected (contiguous ghost batches [0:4], [4:8]) y[0] = {contiguous[0]}; strided would give {strided[0]}")
sys.exit(1 if np.allclose(y, strided, atol=1e-4) else 0)
