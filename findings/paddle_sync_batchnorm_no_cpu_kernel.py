"""PaddlePaddle's SyncBatchNorm has no CPU kernel: on the CPU every forward raises RuntimeError "(NotFound) The kernel
`sync_batch_norm` is not registered.", in training AND after eval(), where its docstring gives the moving statistics
and nothing needs synchronizing. convert_sync_batchnorm and DataParallel accept the layer; the first call fails. So CPU
data-parallel training has no synchronized BatchNorm, and a model converted for multi-GPU training cannot even run
inference on the CPU. No process group is needed to see it: the kernel lookup fails before any communication.

paddle/nn/layer/norm.py: SyncBatchNorm.forward calls _C_ops.sync_batch_norm_ in every mode (is_test = not training).
Exit 1 while refused, 0 once the CPU runs it, 2 on any other error.
"""
import sys
import warnings

warnings.filterwarnings("ignore")
try:
    import numpy as np
    import paddle

    print(f"versions: paddle {paddle.__version__}, numpy {np.__version__}")
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 3)).astype("float32"))
    bn = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(paddle.nn.BatchNorm1D(3))
except Exception as e:  # a missing framework cannot measure anything
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)

observed = {}
for mode in ("train", "eval"):
    getattr(bn, mode)()
    try:
        bn(x)
        observed[mode] = "ok"
    except RuntimeError as e:
        observed[mode] = f"RuntimeError: {str(e).strip().splitlines()[0]}"
    except Exception as e:  # anything else is not the behaviour under test
        print(f"error: {type(e).__name__}: {e}")
        sys.exit(2)
for mode, result in observed.items():
    print(f"observed SyncBatchNorm forward after {mode}(): {result}")
print("expected: eval() normalizes with the moving statistics (nothing to synchronize); training normalizes with the "
      "statistics of every process in the group, or at least of this one")
sys.exit(0 if set(observed.values()) == {"ok"} else 1)
