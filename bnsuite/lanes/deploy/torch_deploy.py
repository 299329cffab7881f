"""PyTorch into ONNX (the TorchScript-based and the dynamo exporters of torch.onnx) and OpenVINO (convert_model).

Models: nn.BatchNorm2d alone and the suite's conv-BN network (adapters/nets/torch_net.py), NCHW, trained with
torch's own forward (layer) or torch.optim.SGD (network). Exports write into the caller's folder.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import time
import types

import numpy as np

from bnsuite.adapters.base import Cited, installed_version
from bnsuite.lanes.deploy import (CHANNELS, EPS, MOMENTUM, NET_ARCH, DeployLane, Export, ExportFacts, Route, Trained)

ONNX_RUNTIMES = ("ort-off", "ort-all", "onnx-reference", "openvino")
OPSET = 17  # BatchNormalization-15: training_mode and the running-statistics outputs

_LITERT = "litert_torch/backend/lowerings/_batch_norm.py"
_TS = "torch/onnx/utils.py export (TorchScript-based exporter) with torch/onnx/symbolic_opset15.py batch_norm"
_DYNAMO = ("onnxscript/function_libs/torch_lib/ops/core.py aten_native_batch_norm (the dynamo exporter's "
           "translation of torch.export's batch norm)")
# torch's momentum weights the new statistic; the exporters write ONNX's convention, the weight of the old value.
_MOMENTUM_ONNX = Cited(1.0 - MOMENTUM, "torch/onnx/symbolic_opset9.py batch_norm: momentum=1 - momentum; "
                       "onnxscript torch_lib aten_native_batch_norm: momentum=1.0 - momentum")


class TorchDeploy(DeployLane):
    framework = "torch"
    source_estimator = Cited("unbiased", "torch/nn/modules/batchnorm.py _BatchNorm.forward -> F.batch_norm: the "
                             "running variance takes the unbiased batch variance (documented in BatchNorm2d's docstring)")
    routes = tuple(
        [Route("torch.onnx-ts", "eval", rt) for rt in ONNX_RUNTIMES]
        + [Route("torch.onnx-ts", "training", rt) for rt in ("ort-off", "ort-all", "onnx-reference")]
        + [Route("torch.onnx-ts", "preserve-frozen", rt) for rt in ("ort-off", "onnx-reference")]
        + [Route("torch.onnx-dynamo", "eval", rt) for rt in ONNX_RUNTIMES]
        + [Route("torch.onnx-dynamo", "train-model", rt) for rt in ("ort-off", "onnx-reference")]
        + [Route("openvino-from-torch", "eval", rt) for rt in ("openvino", "openvino-f32")]
        + [Route("litert-torch", "float32", "litert")])

    def declared(self, exporter, mode, model):
        conv_before = model == "net"  # the network's BN follows a convolution, which exporters may fold it into
        dyn_ts = Cited(True, "torch.onnx.export(dynamic_axes={'x': {0: 'N'}}) names the batch dimension")
        if exporter == "torch.onnx-ts":
            train = mode == "training"
            return ExportFacts(
                statistics=Cited("batch" if train else "running",
                                 f"{_TS}: training=TrainingMode.TRAINING exports model.train() (training_mode=1); "
                                 "EVAL exports model.eval(); PRESERVE keeps each module's own mode (a frozen BN is "
                                 "in eval mode)"),
                bn_node=Cited("none", "torch/onnx/_internal/torchscript_exporter/utils.py _model_to_graph: in "
                                        "TrainingMode.EVAL with do_constant_folding, _jit_pass_onnx_eval_peephole "
                                        "fuses Conv + BatchNorm") if conv_before and mode == "eval" else
                Cited("BatchNormalization", f"{_TS}: one BatchNormalization node per BN (the eval peephole runs in "
                                            "TrainingMode.EVAL only)"),
                momentum_attr=_MOMENTUM_ONNX,
                keeps_state=Cited(not train, "torch/onnx/utils.py _model_to_graph traces the model by running it: in "
                                             "training mode that forward updates the running statistics it then "
                                             "exports (the model given is changed too)"),
                dynamic_batch=dyn_ts)
        if exporter == "torch.onnx-dynamo":
            return ExportFacts(
                statistics=Cited("running", f"{_DYNAMO}: 'training = False' (a 'temporary fix' because ORT supported "
                                            "training mode only below opset 14), so a model in training mode "
                                            "exports inference BatchNorm; torch/onnx/_internal/exporter/_compat.py "
                                            "only warns 'Exporting a model while it is in training mode'"),
                bn_node=Cited("none", "onnxscript/rewriter/rules/common/_fuse_batchnorm.py: BatchNormalization after "
                                        "Conv fused into the Conv (a default rewrite rule of optimize=True)")
                if conv_before else Cited("BatchNormalization", f"{_DYNAMO}: training_mode unset (0)"),
                momentum_attr=_MOMENTUM_ONNX, keeps_state=Cited(True, "torch.export traces without running the "
                                                                     "module's buffer updates into the model"),
                dynamic_batch=Cited(True, "dynamic_shapes=({0: torch.export.Dim('N')},)"))
        if exporter == "openvino-from-torch":
            return ExportFacts.non_onnx_inference(
                "OpenVINO IR", traced="openvino/frontend/pytorch: the model is traced in eval mode",
                dynamic_batch=Cited(True, "ov.convert_model keeps the traced input's dimensions dynamic"),
                precision=Cited("float16", "openvino/_ov_api.py save_model: compress_to_fp16=True by default "
                                           "(weights stored in float16)"))
        if exporter == "litert-torch":
            return ExportFacts.non_onnx_inference(
                "a .tflite flatbuffer", traced=f"{_LITERT}: the module is exported with torch.export in eval mode, "
                "and inference BatchNorm (_native_batch_norm_legit_no_training) lowers to batch_norm_inference",
                dynamic_batch=Cited(False, "litert_torch.convert keeps the sample's static shape unless "
                                           "dynamic_shapes is given (the interpreter can still resize the input)"),
                precision=Cited("float32", "litert_torch.convert without a quantization config keeps float32"))
        raise KeyError(f"torch deploy lane: no exporter {exporter!r}")

    def versions(self):
        return {d: installed_version(d) or "not installed" for d in ("torch", "onnx", "onnxscript", "openvino",
                                                                     "litert-torch", "ai-edge-litert")}

    def declared_folding(self, route, model):
        if route.exporter == "litert-torch":
            return Cited("folded" if model == "net" else "elementwise",
                         f"{_LITERT}: batch_norm_inference (StableHLO), which the TFLite converter lowers to MUL and "
                         "ADD and fuses into a CONV_2D before them")
        if route.runtime.startswith("openvino"):
            return Cited("folded" if model == "net" else "elementwise",
                         "openvino's ONNX and PyTorch frontends decompose BatchNorm into Multiply and Add, which its "
                         "common transformations fuse into the Convolution before them")
        if model == "net" and route.mode in ("eval", "train-model"):
            return Cited("folded", "the exporter folded BN into the Conv (see deploy_bn_node)")
        return Cited("BatchNorm kept", "ONNX Runtime and onnx.reference run the BatchNormalization node: nothing to "
                                       "fold a lone BN into, and ORT's ConvBNFusion needs an inference-mode BN after a "
                                       "Conv (onnxruntime/core/optimizer/conv_bn_fusion.cc)" if model == "net" else
                     "ONNX Runtime and onnx.reference run the BatchNormalization node (no Conv to fold it into)")

    def traps(self):
        return {"deploy_torch_export_after_fp32_precision_ieee": (
            Cited("raises RuntimeError", "torch/backends/cudnn/__init__.py: the legacy getter allow_tf32 raises after "
                                         "the new fp32_precision API set the flags ('a mix of the legacy and new "
                                         "APIs'), and torch.export reads that getter (pytorch/pytorch#179445)"),
            _export_after_ieee),
            "deploy_torch_failed_export_leaves_onednn_disabled": (
            Cited("oneDNN and NNPACK disabled",
                  "torch/export/_trace.py: _ignore_backend_decomps calls torch.backends.mkldnn.set_flags(False) and "
                  "nnpack.set_flags(False), then cudnn.set_flags(False), which raises here, all before its "
                  "try/finally: the flags are never put back"),
            _onednn_after_failed_export)}

    # -- models -------------------------------------------------------------------------------------------------------
    def train(self, kind, batches, frozen=False):
        import torch

        t0 = time.perf_counter()
        rng = np.random.default_rng(7)
        if kind == "layer":
            module = torch.nn.BatchNorm2d(CHANNELS, eps=EPS, momentum=MOMENTUM)
            with torch.no_grad():
                module.weight.copy_(torch.as_tensor(1.0 + 0.5 * rng.standard_normal(CHANNELS), dtype=torch.float32))
                module.bias.copy_(torch.as_tensor(rng.standard_normal(CHANNELS), dtype=torch.float32))
                for x in batches:
                    module(torch.from_numpy(np.asarray(x, np.float32)))
            bns = [module]

            def weights():
                return {f"bn.{k}": v.detach().double().numpy().copy() for k, v in
                        (("scale", module.weight), ("offset", module.bias), ("mean", module.running_mean),
                         ("var", module.running_var))}
        else:
            from bnsuite.adapters.nets import build_network, init_weights

            net = build_network(self.adapter_cls, NET_ARCH, init_weights(NET_ARCH), channels_last=False, eps=EPS,
                                momentum=MOMENTUM)
            for i, x in enumerate(batches):
                net.sgd_step(x, rng.standard_normal((x.shape[0], 4)), lr=0.1)

            class Wrapped(torch.nn.Module):
                """The network as one module (its own modules and plan, so a deep copy exports the copy)."""

                def __init__(self):
                    super().__init__()
                    self.mods, self.ops = net.mods, net.ops

                def forward(self, h):
                    from bnsuite.adapters.nets.torch_net import TorchNet

                    return TorchNet._run(types.SimpleNamespace(torch=torch, mods=self.mods, ops=self.ops), h)

            module = Wrapped()
            bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            weights = net.get_weights
        module.train(True)
        if frozen:
            for bn in bns:
                bn.eval()

        def run(x, training):
            m = copy.deepcopy(module)  # a training forward must not move the trained state
            if training:
                m.train(True)
            else:
                m.eval()
            with torch.no_grad():
                return m(torch.from_numpy(np.asarray(x, np.float32))).double().numpy()

        return Trained(kind, False, lambda x: run(x, False), lambda x: run(x, True), weights(), module,
                       time.perf_counter() - t0)

    # -- exports ------------------------------------------------------------------------------------------------------
    def export(self, model, exporter, mode, folder, example):
        import torch

        t0 = time.perf_counter()
        m = copy.deepcopy(model.handle)  # an export that moves the state changes this copy only
        if mode == "eval":
            m.eval()
        elif mode in ("training", "train-model"):
            m.train(True)
        x = torch.from_numpy(np.asarray(example, np.float32))
        path = os.path.join(folder, f"{exporter}-{mode}-{model.kind}.onnx")
        if exporter == "torch.onnx-ts":
            training = {"eval": torch.onnx.TrainingMode.EVAL, "training": torch.onnx.TrainingMode.TRAINING,
                        "preserve-frozen": torch.onnx.TrainingMode.PRESERVE}[mode]
            buf = io.BytesIO()
            torch.onnx.export(m, (x,), buf, dynamo=False, training=training, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}}, opset_version=OPSET)
            with open(path, "wb") as fh:
                fh.write(buf.getvalue())
        elif exporter == "torch.onnx-dynamo":
            with _default_fp32_precision():
                program = torch.onnx.export(m, (x,), dynamo=True, input_names=["x"], output_names=["y"],
                                            dynamic_shapes=({0: torch.export.Dim("N")},), verbose=False)
            program.save(path, external_data=False)
        elif exporter == "openvino-from-torch":
            import openvino as ov

            path = path.removesuffix(".onnx") + ".xml"
            ov.save_model(ov.convert_model(m.eval(), example_input=x), path)
            return Export(path, "openvino", time.perf_counter() - t0)
        elif exporter == "litert-torch":
            import litert_torch

            path = path.removesuffix(".onnx") + ".tflite"
            with _default_fp32_precision():  # it runs torch.export (see the trap below)
                litert_torch.convert(m.eval(), (x,)).export(path)
            return Export(path, "tflite", time.perf_counter() - t0)
        else:
            raise KeyError(f"torch deploy lane: no exporter {exporter!r}")
        return Export(path, "onnx", time.perf_counter() - t0, bn_outputs=_bn_training_outputs(path))


@contextlib.contextmanager
def _default_fp32_precision():
    """torch's default fp32_precision flags for the duration of a torch.export trace: with the suite's
    torch.backends.fp32_precision = "ieee" (adapters/numerics.py), torch.export reads the legacy getter
    torch.backends.cudnn.allow_tf32, which then raises (the finding torch_export_fails_after_fp32_precision_ieee).
    A trace records operators, not precisions, so the export is the same."""
    import torch

    b = torch.backends
    flags = [b, b.cuda.matmul, b.cudnn, b.cudnn.conv, b.cudnn.rnn]
    saved = [f.fp32_precision for f in flags] if hasattr(b, "fp32_precision") else None
    try:
        if saved is not None:
            for f, default in zip(flags, ("none", "none", "none", "tf32", "tf32")):
                f.fp32_precision = default
        yield
    finally:
        if saved is not None:
            for f, value in zip(flags, saved):
                f.fp32_precision = value


def _export_after_ieee() -> str:
    """torch.export of a BatchNorm2d after every fp32_precision flag is set to "ieee" through the new API only (what
    adapters/numerics.py torch_full_fp32 does to compare with a float64 oracle)."""
    return _failed_export()[0]


def _onednn_after_failed_export() -> str:
    """Which of oneDNN and NNPACK that export left switched off (each was on before it)."""
    off = [name for name, on in _failed_export()[1].items() if not on]
    return " and ".join(off) + " disabled" if off else "kept"


def _failed_export() -> tuple[str, dict]:
    """The export after "ieee", and oneDNN's and NNPACK's flags as it left them; the process's precision and backend
    flags are put back after."""
    import torch

    from bnsuite.adapters.numerics import torch_cpu_backend_flags_kept, torch_full_fp32

    with _default_fp32_precision(), torch_cpu_backend_flags_kept() as flags:
        torch._C._set_mkldnn_enabled(True)  # on, as in a fresh process: the export decides what stays
        torch._C._set_nnpack_enabled(True)
        torch_full_fp32()
        try:
            torch.export.export(torch.nn.BatchNorm2d(CHANNELS).eval(), (torch.zeros(2, CHANNELS, 4, 4),))
            outcome = "exports"
        except RuntimeError:
            outcome = "raises RuntimeError"
        return outcome, flags.enabled_now()


def _bn_training_outputs(path: str) -> tuple[str, ...]:
    """The running-mean and running-variance outputs of the first training-mode BatchNormalization node, if any."""
    import onnx

    for node in onnx.load(path).graph.node:
        if node.op_type == "BatchNormalization" and len(node.output) >= 3 and node.output[1] and node.output[2]:
            return tuple(node.output[1:3])
    return ()
