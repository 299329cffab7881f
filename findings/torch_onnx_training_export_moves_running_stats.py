"""torch.onnx.export(..., training=TrainingMode.TRAINING) with the TorchScript-based exporter traces the model by
running it in training mode: that forward updates the BatchNorm's running statistics of the model given, and the
moved statistics are what the ONNX file stores (torch/onnx/_internal/torchscript_exporter/utils.py _model_to_graph).
Exit 1 while the export moves them, 0 once it leaves them, 2 on any other error."""
import io
import sys

try:
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    print(f"versions: torch {torch.__version__}, onnx {onnx.__version__}, numpy {np.__version__}")
    bn = torch.nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((8, 3, 4, 4)) + 2.0, dtype=torch.float32)
    buf = io.BytesIO()
    torch.onnx.export(bn.train(), (x,), buf, dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                      input_names=["x"], opset_version=17)
    model = onnx.load_from_string(buf.getvalue())
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    moved = float(np.max(np.abs(bn.running_mean.numpy() - 0.5)))
    in_file = float(np.max(np.abs(stored[node.input[3]] - 0.5)))
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: the model's running mean moved by {moved:.4g} during the export "
      f"(num_batches_tracked {int(bn.num_batches_tracked)}); the file's stored running mean is off by {in_file:.4g}")
print("expected: an export leaves the model's running statistics as they were, and stores them (both 0)")
sys.exit(1 if moved > 0 or in_file > 0 else 0)
