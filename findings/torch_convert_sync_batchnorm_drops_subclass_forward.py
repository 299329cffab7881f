"""torch.nn.SyncBatchNorm.convert_sync_batchnorm replaces a _BatchNorm subclass by a bare SyncBatchNorm: what the
subclass's own forward added (here a ReLU, the shape of timm's BatchNormAct2d) is dropped silently, so the converted
model computes another function (torch/nn/modules/batchnorm.py: convert_sync_batchnorm builds
torch.nn.SyncBatchNorm(...) for any _BatchNorm instance). Compared in eval mode, where SyncBatchNorm runs on the CPU.
Exit 1 while the subclass's forward is dropped, 0 once kept (or the conversion refuses), 2 on any other error."""
import copy
import sys

try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")

    class BatchNormReLU2d(torch.nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    torch.manual_seed(0)  # the convolution's initial weights: the same printed values on every run
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), BatchNormReLU2d(4, eps=1e-3, momentum=0.03)).eval()
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)), dtype=torch.float32)
    try:
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    except Exception as e:  # a refusal is a fix too: nothing is dropped silently
        print(f"observed: convert_sync_batchnorm refuses: {type(e).__name__}: {e}")
        sys.exit(0)
    with torch.no_grad():
        before, after = model(x), converted(x)
except Exception as e:  # a missing framework or any other error: nothing measured
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
diff = float((before - after).abs().max())
print(f"observed: converted layer {type(converted[1]).__name__}, min output {float(after.min()):.3g}, "
      f"max abs difference to the model {diff:.3g}")
print("expected: the converted model computes what the model computed (min output >= 0, difference 0)")
sys.exit(0 if diff == 0.0 else 1)
