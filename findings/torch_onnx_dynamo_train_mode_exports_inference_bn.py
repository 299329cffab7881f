"""torch.onnx.export(model, dynamo=True) of a model in training mode writes an INFERENCE BatchNormalization
(training_mode unset): onnxscript's torch_lib aten_native_batch_norm forces `training = False` ("a temporary fix ...
ORT currently only supports training mode with opset version lower than 14"), with only a UserWarning about training
mode. The exported graph normalizes with the running statistics where the model normalizes with the batch's.
Exit 1 while the exported graph uses the running statistics, 0 once it uses the batch's, 2 on any other error."""
import sys
import warnings

try:
    import numpy as np
    import onnx
    import onnxscript
    import torch
    from onnx.reference import ReferenceEvaluator

    warnings.simplefilter("ignore")
    print(f"versions: torch {torch.__version__}, onnxscript {onnxscript.__version__}, onnx {onnx.__version__}")
    bn = torch.nn.BatchNorm2d(3).train()
    x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32) * 2 + 1
    program = torch.onnx.export(bn, (torch.from_numpy(x),), dynamo=True, input_names=["x"], verbose=False)
    y = ReferenceEvaluator(program.model_proto).run(None, {"x": x})[0]
    with torch.no_grad():
        y_train = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()
        y_eval = bn.eval()(torch.from_numpy(x)).numpy()
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
err_train, err_eval = float(np.abs(y - y_train).max()), float(np.abs(y - y_eval).max())
print(f"observed: exported graph vs the model's training-mode output: max abs diff {err_train:.3g}; "
      f"vs its inference-mode output: {err_eval:.3g}")
print("expected: a model exported in training mode normalizes with the batch statistics (diff ~1e-6)")
sys.exit(1 if err_eval < 1e-5 < err_train else 0)
