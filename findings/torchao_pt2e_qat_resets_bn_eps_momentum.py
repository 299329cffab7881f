"""torchao's PT2E QAT flow resets a BatchNorm's eps and momentum to torch's defaults (1e-5, 0.1): prepare_qat_pt2e
(qat_utils.py: _get_qat_conv_bn_pattern, bn_eps = 1e-5) and move_exported_model_to_eval (export_utils.py:
_replace_batchnorm) both rewrite the batch_norm node from patterns with the defaults.
Exit 1 while the values are reset, 0 once kept, 2 on any other error."""
import sys

try:
    import numpy as np
    import torch
    import torchao
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    print(f"versions: torch {torch.__version__}, torchao {torchao.__version__}, numpy {np.__version__}")
except Exception as e:  # a missing framework cannot measure anything
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)


def bn_node_args(gm):
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.batch_norm.default:
            return {"training": node.args[5], "momentum": node.args[6], "eps": node.args[7]}
    raise RuntimeError("no aten.batch_norm node")


try:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4, eps=1e-3, momentum=0.03))
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((4, 3, 6, 6)), dtype=torch.float32)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    gm = prepare_qat_pt2e(torch.export.export(model.train(), (x,)).module(), quantizer)
    after_prepare = bn_node_args(gm)
    move_exported_model_to_eval(gm)
    after_eval = bn_node_args(gm)
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed after prepare_qat_pt2e: {after_prepare}")
print(f"observed after move_exported_model_to_eval: {after_eval}")
print("expected: eps 0.001 and momentum 0.03, as the BatchNorm2d was built")
kept = all(abs(a["eps"] - 1e-3) < 1e-12 and abs(a["momentum"] - 0.03) < 1e-12 for a in (after_prepare, after_eval))
sys.exit(0 if kept else 1)
