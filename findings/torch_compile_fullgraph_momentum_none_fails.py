"""torch: a BatchNorm with momentum=None (the cumulative moving average) cannot be trained under
torch.compile(fullgraph=True) nor exported with torch.export in training mode.

torch/nn/modules/batchnorm.py: _BatchNorm.forward computes exponential_average_factor = 1.0 /
float(self.num_batches_tracked), a Python float of a tensor's value, which dynamo cannot trace without a guard on
data. Eager mode and fullgraph=False (a graph break) work.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    x = torch.from_numpy(np.random.default_rng(0).normal(0.5, 2.0, (4, 3, 5, 6)).astype(np.float32))
    observed = {}
    for name, run in (("torch.compile(fullgraph=True)", lambda bn: torch.compile(bn, backend="aot_eager",
                                                                                  fullgraph=True)(x)),
                      ("torch.export.export", lambda bn: torch.export.export(bn, (x,)))):
        bn = torch.nn.BatchNorm2d(3, momentum=None).train()
        try:
            run(bn)
            observed[name] = "ok"
        except Exception as e:  # torch._dynamo.exc.UserError / GuardOnDataDependentSymNode
            observed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
    print(f"torch {torch.__version__}: BatchNorm2d(3, momentum=None) in training mode")
    for name, what in observed.items():
        print(f"observed: {name}: {what}")
    print("expected: both run, as eager mode and fullgraph=False do (the cumulative average of the batch statistics)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if any(v != "ok" for v in observed.values()) else 0)
