"""torch: requires_grad_(False) and torch.no_grad() do not freeze BatchNorm; its running statistics still move.

Only module.eval() stops the update (torch/nn/modules/batchnorm.py: _BatchNorm.forward reads self.training only).
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    x = torch.from_numpy(np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 5, 5)).astype(np.float32))
    bn = torch.nn.BatchNorm2d(4)
    bn.requires_grad_(False)  # the "freeze" idiom from many fine-tuning tutorials
    with torch.no_grad():  # and no autograd either
        bn(x)  # the module is still in training mode
    moved = float(bn.running_mean.abs().max())
    print(f"torch {torch.__version__}: requires_grad_(False) + no_grad(), then one forward pass in train mode")
    print(f"observed: running_mean max |value| = {moved:.4f} (it moved from 0; num_batches_tracked = "
          f"{int(bn.num_batches_tracked)})")
    print("expected (what 'frozen' suggests): running_mean stays 0; only bn.eval() keeps it")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if moved > 0 else 0)
