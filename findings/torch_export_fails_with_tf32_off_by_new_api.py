"""torch: after TF32 is turned off with the per-backend API (torch.backends.fp32_precision = "ieee", the documented
replacement of allow_tf32), torch.export.export raises RuntimeError, on a CPU-only machine too.

torch/export/_trace.py: _ignore_backend_decomps calls torch.backends.cudnn.set_flags(False), which reads the legacy
torch._C._get_cudnn_allow_tf32(); that getter refuses to answer once the new API set the cuDNN flags ("you have used
a mix of the legacy and new APIs"), though the user used only the new one.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    x = torch.from_numpy(np.random.default_rng(0).normal(0.0, 1.0, (4, 3)).astype(np.float32))
    bn = torch.nn.BatchNorm1d(3)
    torch.backends.fp32_precision = "ieee"
    try:
        torch.export.export(bn, (x,))
        observed = "exported"
    except RuntimeError as e:
        observed = f"RuntimeError: {str(e)[:150]}"
    print(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()}): torch.backends.fp32_precision = "
          "'ieee', then torch.export.export(BatchNorm1d(3), (x,))")
    print(f"observed: {observed}")
    print("expected: exported (only the new API was used; TF32 changes nothing on a CPU)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if observed.startswith("RuntimeError") else 0)
