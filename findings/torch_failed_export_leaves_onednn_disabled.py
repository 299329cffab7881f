"""A torch.export that raises leaves oneDNN (mkldnn) and NNPACK switched off for the rest of the process:
torch/export/_trace.py _ignore_backend_decomps calls torch.backends.mkldnn.set_flags(False) and
nnpack.set_flags(False), then cudnn.set_flags(False), all before its try/finally; when the cuDNN call raises (after
torch.backends.fp32_precision = "ieee", the finding torch_export_fails_after_fp32_precision_ieee) nothing puts the
first two back, and every later CPU convolution runs without oneDNN (slower, and with other rounding).
Exit 1 while the flags stay off, 0 once they are restored (or the export no longer fails), 2 on any other error."""
import sys

try:
    import numpy as np
    import torch

    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")
    before = (torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled())
    torch.backends.fp32_precision = "ieee"
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), dtype=torch.float32)
    try:
        torch.export.export(torch.nn.BatchNorm2d(3).eval(), (x,))
        export = "exports"
    except RuntimeError as e:
        export = f"RuntimeError ({str(e)[:60]}...)"
    after = (torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled())
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: torch.export.export: {export}; (mkldnn, nnpack) enabled before {before}, after {after}")
print("expected: a failed export leaves the backend flags as they were")
sys.exit(1 if before != after else 0)
