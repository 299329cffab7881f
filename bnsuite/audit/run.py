"""Running a torch, Keras, Flax (linen or nnx) or TF1-graph model in inference mode on a NumPy input, and the fan-in of each of its kernels (for
the derived output tolerance of suites/tolerances_models.py)."""

from __future__ import annotations

import numpy as np


def infer(model, framework: str, x: np.ndarray) -> np.ndarray:
    """The model's inference-mode output (its first array where it returns several), float64. A torch model runs in
    eval() and is put back in its previous mode."""
    if framework == "torch":
        import torch

        was = model.training
        model.eval()
        try:
            p = next(iter(model.parameters()), None)
            with torch.no_grad():
                y = model(torch.as_tensor(np.asarray(x), dtype=p.dtype if p is not None else torch.float32))
        finally:
            model.train(was)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return y.detach().cpu().double().numpy()
    if framework in ("keras", "tf_keras"):
        y = model(x, training=False)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return np.asarray(y.numpy() if hasattr(y, "numpy") and framework == "tf_keras" else
                          __import__(framework).ops.convert_to_numpy(y) if framework == "keras" else y, np.float64)
    if framework == "flax-nnx":
        from bnsuite.audit.read_nnx import infer_nnx

        y = infer_nnx(model, x)
    elif framework == "tf1-graph":
        from bnsuite.audit.read_tf1 import infer_tf1_graph

        y = infer_tf1_graph(model, x)
    else:
        module, variables = model[0], model[1]
        kwargs = dict(model[2]) if len(model) == 3 else {}
        kwargs.pop("mutable", None)
        y = module.apply(variables, x, **kwargs)
    y = y[0] if isinstance(y, (tuple, list)) else y
    return np.asarray(y, np.float64)


def fan_ins(model, framework: str) -> list[int]:
    """Terms per output of each convolution and dense kernel (0 kernels: an empty list)."""
    if framework == "torch":
        import torch

        return [int(m.weight[0].numel()) for m in model.modules()
                if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
    if framework in ("keras", "tf_keras"):
        out = []
        for v in model.weights:
            name = (getattr(v, "path", None) or v.name).split(":")[0]
            shape = tuple(v.shape)
            if name.endswith("depthwise_kernel"):
                out.append(int(np.prod(shape[:-2])))
            elif name.endswith("kernel"):
                out.append(int(np.prod(shape[:-1])))
        return out
    if framework == "flax-nnx":
        from bnsuite.audit.read_nnx import nnx_fan_ins

        return nnx_fan_ins(model)
    if framework == "tf1-graph":
        from bnsuite.audit.read_tf1 import tf1_fan_ins

        return tf1_fan_ins(model)
    from flax import traverse_util

    flat = traverse_util.flatten_dict(dict(model[1].get("params", {})))
    return [int(np.prod(v.shape[:-1])) for k, v in flat.items() if k[-1] == "kernel"]
