"""torch: the module of an ExportedProgram exported in training mode and decomposed with run_decompositions() runs
forward (and updates the running statistics) but its backward raises: autograd finds running_mean/var "modified by
an inplace operation".

torch/_decomp/decompositions.py: batch_norm -> _native_batch_norm_legit_functional, which returns new running
statistics; the unlifted module (torch/export/_unlift.py) copies them into the buffers with aten.copy_ after the op,
whose backward saved the buffers. Without run_decompositions (aten.batch_norm kept) backward works.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0.5, 2.0, (4, 3, 5, 6)).astype(np.float32))
    dy = torch.from_numpy(rng.normal(0.0, 1.0, (4, 3, 5, 6)).astype(np.float32))
    observed = {}
    for decompose in (False, True):
        bn = torch.nn.BatchNorm2d(3).train()
        ep = torch.export.export(bn, (x,))
        gm = (ep.run_decompositions() if decompose else ep).module()
        xg = x.clone().requires_grad_(True)
        try:
            (gm(xg) * dy).sum().backward()
            observed[decompose] = f"ok, |dx| max {float(xg.grad.abs().max()):.3g}"
        except RuntimeError as e:
            observed[decompose] = f"RuntimeError: {str(e)[:110]}"
    print(f"torch {torch.__version__}: export(BatchNorm2d(3).train()).module(), (gm(x) * dy).sum().backward()")
    print(f"observed: without run_decompositions: {observed[False]}")
    print(f"observed: with run_decompositions(): {observed[True]}")
    print("expected: the same gradient both ways (eager autograd differentiates the training-mode batch norm)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if observed[True].startswith("RuntimeError") else 0)
