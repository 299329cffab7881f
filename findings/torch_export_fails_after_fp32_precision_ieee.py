"""torch.export (and so torch.onnx.export(dynamo=True)) fails with RuntimeError after the documented new API
torch.backends.fp32_precision = "ieee" (no legacy flag touched): torch.export reads the legacy getter
torch.backends.cudnn.allow_tf32, which raises 'you have used a mix of the legacy and new APIs'
(torch/backends/cudnn/__init__.py). Exit 1 while it raises, 0 once the export works, 2 on any other error."""
import sys

try:
    import numpy as np
    import torch

    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), dtype=torch.float32)
    torch.backends.fp32_precision = "ieee"
    try:
        torch.export.export(torch.nn.BatchNorm2d(3).eval(), (x,))
        observed = "exports"
    except RuntimeError as e:
        observed = f"RuntimeError: {str(e)[:160]}"
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: torch.export.export after torch.backends.fp32_precision = 'ieee': {observed}")
print("expected: the export works (the flag only chooses float32 precision for kernels)")
sys.exit(1 if observed != "exports" else 0)
