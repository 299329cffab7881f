"""A torchvision ResNet-18 ported to Keras (keras_models.resnet18_base) and to Flax (flax_models.ResNet18), with the
suite's conversion (bnsuite/adapters/porting.py) or naively.

The conversion: convolution kernels OIHW -> HWIO, the dense kernel (out, in) -> (in, out); per BatchNorm the four
vectors copied unchanged, eps copied unchanged, momentum through the canonical convention (torch 0.1 weights the new
statistic; Keras and Flax weigh the old value, so 1 - 0.1 = 0.9); inputs NCHW -> NHWC. The naive port copies the
same weights but keeps the target's BatchNorm defaults (Keras eps 1e-3, momentum 0.99; Flax eps 1e-5, momentum 0.99).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.porting import native_momentum


def _torch_arrays(model) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _target_bn(decl, torch_bn, naive: bool) -> dict:
    """eps and momentum of the target layer: the suite's conversion, or the target's defaults."""
    if naive:
        return {"eps": decl.default_eps.value, "momentum": decl.default_momentum.value}
    return {"eps": float(torch_bn.eps), "momentum": native_momentum(decl, float(torch_bn.momentum))}


def torch_resnet18_to_keras(torch_model, naive: bool = False, package: str = "keras"):
    """The Keras ResNet-18 (functional API) holding `torch_model`'s weights; its input is NHWC."""
    import importlib

    import torch

    from bnsuite.models.keras_models import resnet18_base

    K = importlib.import_module(package)
    if package == "keras":
        from bnsuite.adapters.keras3 import KerasJax, KerasTensorFlow, KerasTorch

        decl = {c.backend: c for c in (KerasTensorFlow, KerasJax, KerasTorch)}[K.backend.backend()].declare()
    else:
        from bnsuite.adapters.tf_keras_v2 import TfKerasV2

        decl = TfKerasV2.declare()
    bn0 = next(m for m in torch_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    hp = _target_bn(decl, bn0, naive)
    # zeros: every weight is set from torch_model below (random initializers compile per kernel shape on JAX)
    base = resnet18_base(K, eps=hp["eps"], momentum=hp["momentum"], kernel_initializer="zeros")
    h = K.layers.GlobalAveragePooling2D(name="avgpool")(base.output)
    model = K.Model(base.input, K.layers.Dense(torch_model.fc.out_features, name="fc", kernel_initializer="zeros")(h))
    sd = _torch_arrays(torch_model)
    for layer in model.layers:
        key = _torch_key(layer.name)
        if isinstance(layer, K.layers.Conv2D):
            layer.set_weights([sd[f"{key}.weight"].transpose(2, 3, 1, 0)])
        elif isinstance(layer, K.layers.BatchNormalization):
            layer.set_weights([sd[f"{key}.weight"], sd[f"{key}.bias"], sd[f"{key}.running_mean"],
                               sd[f"{key}.running_var"]])
        elif isinstance(layer, K.layers.Dense):
            layer.set_weights([sd["fc.weight"].T, sd["fc.bias"]])
    return model


def _torch_key(name: str) -> str:
    """Keras layer name -> torchvision module name: layer1_0_downsample_0 -> layer1.0.downsample.0."""
    parts = name.split("_")
    return ".".join(parts)


def torch_resnet18_to_flax(torch_model, naive: bool = False):
    """(module, variables, {"train": False}) of the linen ResNet-18 holding `torch_model`'s weights; input NHWC."""
    import torch

    from bnsuite.adapters.flax_linen import FlaxLinen
    from bnsuite.models.flax_models import _resnet18_class

    decl = FlaxLinen.declare()
    bn0 = next(m for m in torch_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    hp = _target_bn(decl, bn0, naive)
    module = _resnet18_class()(num_classes=torch_model.fc.out_features, momentum=hp["momentum"], eps=hp["eps"])
    sd = _torch_arrays(torch_model)
    params, stats = {}, {}

    def put(tree, path, leaf, value):
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(value, np.float32)

    for key in {k.rsplit(".", 1)[0] for k in sd}:
        path = _flax_path(key)
        if key == "fc":
            put(params, path, "kernel", sd["fc.weight"].T)
            put(params, path, "bias", sd["fc.bias"])
        elif f"{key}.running_mean" in sd:
            put(params, path, "scale", sd[f"{key}.weight"])
            put(params, path, "bias", sd[f"{key}.bias"])
            put(stats, path, "mean", sd[f"{key}.running_mean"])
            put(stats, path, "var", sd[f"{key}.running_var"])
        else:
            put(params, path, "kernel", sd[f"{key}.weight"].transpose(2, 3, 1, 0))
    return module, {"params": params, "batch_stats": stats}, {"train": False}


def _flax_path(key: str) -> tuple:
    """torchvision module name -> linen path: layer1.0.downsample.1 -> (layer1_0, downsample_bn)."""
    parts = key.split(".")
    if parts[0].startswith("layer"):
        block = f"{parts[0]}_{parts[1]}"
        rest = parts[2:]
        leaf = {"0": "downsample_conv", "1": "downsample_bn"}[rest[1]] if rest[0] == "downsample" else rest[0]
        return (block, leaf)
    return (parts[0],)
