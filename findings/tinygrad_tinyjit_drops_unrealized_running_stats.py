"""tinygrad: a BatchNorm forward jitted with TinyJit (`TinyJit(lambda x: bn(x).realize())`) and called in training
mode updates the running statistics on its first two calls only (the plain call and the capture call, which run the
Python); every replay after them leaves them where they were, without an error. The assigns are lazy and not realized
inside the call, so the capture holds no kernel for them.

tinygrad/engine/jit.py: _TinyJit.__call__ captures what the call realizes and replays it without running fxn;
tinygrad/nn/__init__.py: BatchNorm.__call__ queues running_mean.assign(...) (lazy).
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import importlib.metadata
import os
import sys

os.environ.setdefault("PARALLEL", "0")  # compile in this process: no worker pool for a few small kernels
try:
    import numpy as np
    from tinygrad import Tensor, TinyJit, nn
    from tinygrad.helpers import Context

    print(f"versions: tinygrad {importlib.metadata.version('tinygrad')}, numpy {np.__version__}")
    xs = np.random.default_rng(0).normal(2.0, 1.0, (5, 8, 3)).astype(np.float32)  # 5 steps of 8 x 3, means near 2

    def means(jitted: bool) -> list:
        bn = nn.BatchNorm(3)
        fwd = TinyJit(lambda x: bn(x).realize()) if jitted else (lambda x: bn(x).realize())
        out = []
        for x in xs:
            with Context(TRAINING=1):
                fwd(Tensor(x).contiguous().realize())
            out.append(float(bn.running_mean.numpy()[0]))
        return out

    jit, eager = means(True), means(False)
    print("TinyJit(lambda x: bn(x).realize()), 5 training calls in Context(TRAINING=1), momentum 0.1")
    print(f"observed: running_mean[0] after each call {np.round(jit, 6).tolist()} (no error, no warning)")
    print(f"expected: as without TinyJit                {np.round(eager, 6).tolist()}")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if jit[2:] == [jit[1]] * 3 and not np.allclose(jit[-1], eager[-1]) else 0)
