"""torch: a BatchNorm with track_running_stats=False raises at batch size 1 even in eval() mode.

It has no running statistics, so eval() still normalizes with the batch's own statistics, and one value per
channel is rejected (torch/nn/functional.py: batch_norm -> _verify_batch_size when training or no running stats).
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    x = torch.from_numpy(np.random.default_rng(0).normal(0.0, 1.0, (1, 4)).astype(np.float32))
    bn = torch.nn.BatchNorm1d(4, track_running_stats=False).eval()
    try:
        bn(x)
        observed = "no error"
    except ValueError as e:
        observed = f"ValueError: {e}"
    print(f"torch {torch.__version__}: BatchNorm1d(4, track_running_stats=False).eval() on a (1, 4) input")
    print(f"observed: {observed}")
    print("expected: an output (or a documented refusal in eval mode); the other frameworks' batch-statistics "
          "inference returns the offset")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if observed.startswith("ValueError") else 0)
