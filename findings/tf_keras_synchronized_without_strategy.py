"""tf_keras BatchNormalization(synchronized=True) WITHOUT any strategy, which its docstring says has no impact:
the running variance of a rank-4 batch becomes biased (the fused kernel is disabled) and the variance is computed
one-pass (lost on a mean 1e4 times the spread). Exit 1 while either holds, 0 once neither, 2 on any other error."""
import sys

try:
    import numpy as np
    import tf_keras
    print(f"versions: tf_keras {tf_keras.__version__}, tensorflow {sys.modules['tensorflow'].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 2, 3)).astype(np.float32)
    hard = x + np.float32(1e4)
    out = {}
    for sync in (False, True):
        bn = tf_keras.layers.BatchNormalization(momentum=0.0, synchronized=sync)
        bn.build(x.shape)
        bn(x, training=True)
        out[sync] = (bn.moving_variance.numpy(), np.abs(bn(hard, training=True).numpy()
                                                       - (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-3)).max())
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
n = 16
print(f"observed running variance synchronized=False: {out[False][0]}, synchronized=True: {out[True][0]}")
print(f"expected (the same; unbiased batch variance): {x.reshape(-1, 3).var(0, ddof=1)}; biased: {x.reshape(-1, 3).var(0)}")
print(f"observed max output error on x + 1e4: synchronized=False {out[False][1]:.3g}, synchronized=True {out[True][1]:.3g}")
print("expected: the same small error for both")
same_var = np.allclose(out[False][0], out[True][0], rtol=1e-4)
sys.exit(0 if same_var and out[True][1] < 10 * max(out[False][1], 1e-3) else 1)
