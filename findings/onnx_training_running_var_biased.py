"""ONNX BatchNormalization in training mode (opset 15+) updates the running variance with the BIASED (population)
batch variance, running_var = momentum * var + (1 - momentum) * var_biased (onnx/reference/ops/
op_batch_normalization.py; ONNX Runtime the same), while torch updates it with the UNBIASED one. A torch training
graph exported to ONNX (TrainingMode.TRAINING) therefore moves its running variance differently from torch.
Exit 1 while ONNX Runtime returns the biased update, 0 once it matches torch, 2 on any other error."""
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    print(f"versions: torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2)).astype(np.float32) * 2 + 1  # 8 values per channel
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], momentum=0.9,
                            training_mode=1)
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    graph = helper.make_graph([node], "bn", [vi("x", [2, 3, 2, 2])] + [vi(n, [3]) for n in "sbmv"],
                              [vi("y", [2, 3, 2, 2]), vi("rm", [3]), vi("rv", [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    rv = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x, "s": ones, "b": zeros, "m": zeros,
                                                                    "v": ones})[2]
    bn = torch.nn.BatchNorm2d(3, momentum=0.1).train()  # torch's momentum 0.1 = ONNX's 0.9
    bn(torch.from_numpy(x))
    rv_torch = bn.running_var.detach().numpy()
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: ONNX Runtime running_var {rv}, torch running_var {rv_torch} "
      f"(max rel diff {float(np.max(np.abs(rv / rv_torch - 1))):.3g})")
print("expected (torch's convention): the unbiased batch variance (n/(n-1) times the biased one) in the update")
sys.exit(1 if not np.allclose(rv, rv_torch, rtol=1e-5) else 0)
