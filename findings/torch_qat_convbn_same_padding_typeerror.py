"""Eager quantization-aware training cannot run a conv built with padding="same": fuse_modules_qat + prepare_qat
swap Conv2d + BatchNorm2d for the QAT ConvBn2d, whose constructor applies _pair(padding) and turns 'same' into
('s', 'a', 'm', 'e') (torch/ao/nn/intrinsic/qat/modules/conv_fused.py: ConvBn2d.__init__); the first forward's
F.conv2d then raises TypeError. The float model runs, and padding=1 (the same arithmetic for a 3x3 kernel) trains.
Exit 1 while the forward raises, 0 once it runs, 2 on any other error."""
import sys

try:
    import numpy as np
    import torch
    from torch.ao.quantization import fuse_modules_qat, get_default_qat_qconfig, prepare_qat
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding="same"), torch.nn.BatchNorm2d(4)).train()
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)), dtype=torch.float32)
    model(x)  # the float model runs
    qat = fuse_modules_qat(model, [["0", "1"]])
    qat.qconfig = get_default_qat_qconfig("x86")
    qat = prepare_qat(qat)
except Exception as e:  # a missing framework or any other error: nothing measured
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
try:
    qat(x)
    observed = "runs"
except TypeError as e:
    observed = f"TypeError: {str(e).splitlines()[0]}"
print(f"observed: QAT ConvBn2d padding {qat[0].padding!r}; its training forward: {observed}")
print("expected: the QAT module keeps padding='same' and its training forward runs, as the float model's does")
sys.exit(0 if observed == "runs" else 1)
