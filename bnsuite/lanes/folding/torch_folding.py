"""The folding lane in PyTorch: torch.nn.utils.fusion, torch.ao.quantization's eager and FX fusion and eager QAT,
torchao's PT2E QAT flow and SyncBatchNorm.convert_sync_batchnorm, each declared with the installed source behind it.

Sources are of the installed packages: torch 2.13.0 (``torch/...``) and torchao 0.18.0 (``torchao/...``).
"""

from __future__ import annotations

import copy

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.lanes.folding import FoldingLane, Outcome, Survives
from bnsuite.lanes.folding.torch_models import bn_attrs, build, net_tensors, quantizable_net, tensors
from bnsuite.lanes.folding.torch_models import np_ as _np

__all__ = ["PATHS", "TorchFolding", "bn_attrs", "build", "tensors"]

_FUSION = "torch/nn/utils/fusion.py"
_QAT = "torch/ao/nn/intrinsic/qat/modules/conv_fused.py"
_BN = "torch/nn/modules/batchnorm.py"
_PT2E = "torchao/quantization/pt2e"
FOLD_MODELS = ("conv_bn", "conv_bn_relu_dense")
ALL = ("eps", "momentum", "training", "affine", "track_running_stats")

# Eager QAT of a fused conv-BN (or conv-BN-relu): the BatchNorm's attributes carried over, the training flag set by
# update_bn_stats / freeze_bn_stats, the output fake-quantized.
_QAT_UPDATING = Survives("qat", kept=("eps", "momentum", "affine", "track_running_stats"), reset={"training": True},
                         train_stats="batch", stats_move=True, quantized=True)
_QAT_FROZEN = Survives("qat", kept=("eps", "momentum", "affine", "track_running_stats"), reset={"training": False},
                       train_stats="running", stats_move=False, quantized=True)

PATHS = {
    "fuse_conv_bn_eval": (FOLD_MODELS, Cited(
        Survives("raises:AssertionError", folded=True),
        f"{_FUSION}: fuse_conv_bn_eval raises AssertionError('Fusion only for eval!') when conv.training or "
        "bn.training; fuse_conv_bn_weights folds with bn.eps: W * rsqrt(var + eps) * gamma")),
    "fuse_linear_bn_eval": (("linear_bn",), Cited(
        Survives("raises:AssertionError", folded=True),
        f"{_FUSION}: fuse_linear_bn_eval raises AssertionError('Fusion only for eval!') in train mode; "
        "fuse_linear_bn_weights: bn_scale = bn_w * rsqrt(bn_rv + bn_eps)")),
    "fuse_modules": (FOLD_MODELS, Cited(
        Survives("raises:AssertionError", folded=True),
        "torch/ao/quantization/fuse_modules.py: fuse_modules(is_qat=False) -> fuser_method_mappings.fuse_conv_bn, "
        "which asserts conv.training == bn.training and in eval calls nn.utils.fusion.fuse_conv_bn_eval; in train "
        "mode it needs is_qat=True (AssertionError)")),
    "fuse_fx": (FOLD_MODELS, Cited(
        Survives("raises:AssertionError", folded=True),
        "torch/ao/quantization/quantize_fx.py: fuse_fx -> fx/fuse.py with the native backend config's "
        "fuse_conv_bn; train mode: fuser_method_mappings.fuse_conv_bn AssertionError unless is_qat")),
    "fx_optimization_fuse": (FOLD_MODELS, Cited(
        Survives("raises:AssertionError", folded=True),
        "torch/fx/experimental/optimization.py: fuse() matches (Conv2d, BatchNorm2d) and calls "
        f"fuse_conv_bn_eval, which raises AssertionError('Fusion only for eval!') in train mode ({_FUSION})")),
    "qat_update_bn_stats": (("conv_bn",), Cited(
        _QAT_UPDATING,
        f"{_QAT}: ConvBn2d.from_float passes bn.eps, bn.momentum to the constructor and shares running_mean/var; "
        "_forward_approximate in bn.training updates the statistics (self.bn(conv_out_bias)) and rescales the "
        "output by running_std / batch_std (batch statistics); update_bn_stats sets bn.training = True")),
    "qat_freeze_bn_stats": (("conv_bn",), Cited(
        _QAT_FROZEN,
        f"{_QAT}: freeze_bn_stats sets freeze_bn = True and bn.training = False, so _forward_approximate takes the "
        "running-statistics branch with no update; train() does not touch the children while freeze_bn (so the "
        "BatchNorm's training flag is False by design)")),
    "qat_relu_update_bn_stats": (("conv_bn_relu",), Cited(
        _QAT_UPDATING,
        f"{_QAT}: ConvBnReLU2d(ConvBn2d) runs F.relu(ConvBn2d._forward(input)), the same _forward_approximate "
        "(batch statistics, running statistics updated by bn.momentum); torch/ao/quantization/"
        "fuser_method_mappings.py fuse_conv_bn_relu(is_qat=True) builds nni.ConvBnReLU2d(conv, bn, relu), which "
        "prepare_qat swaps for the QAT ConvBnReLU2d.from_float (bn.eps, bn.momentum passed on)")),
    "qat_relu_freeze_bn_stats": (("conv_bn_relu",), Cited(
        _QAT_FROZEN,
        f"{_QAT}: ConvBnReLU2d inherits freeze_bn_stats (freeze_bn = True, bn.training = False): the "
        "running-statistics branch of _forward_approximate, then F.relu")),
    "qat_convert": (("conv_bn_relu_dense",), Cited(
        Survives("qat", folded=True, quantized=True),
        f"{_QAT}: _ConvBnNd.to_float folds with fuse_conv_bn_weights(weight, bias, bn.running_mean, "
        "bn.running_var, bn.eps, bn.weight, bn.bias); torch/ao/nn/intrinsic/quantized/modules/conv_relu.py "
        "ConvReLU2d.from_float takes the folded float module and quantizes its weight per channel; "
        "torch/ao/quantization/quantize.py convert swaps every QAT module for its quantized one (the BatchNorm "
        "becomes Identity)")),
    "pt2e_qat": (("conv_bn",), Cited(
        Survives("qat", kept=("affine", "track_running_stats"), reset={"eps": 1e-5, "momentum": 0.1, "training": False},
                 train_stats="batch",
                 stats_move=True, quantized=True),
        f"{_PT2E}/qat_utils.py: _get_qat_conv_bn_pattern hard-codes bn_eps = 1e-5 ('TODO: allow setting eps') and "
        "F.batch_norm with the default momentum; _fuse_conv_bn_qat_helper copies conv literal args only ('TODO: do "
        f"this for literal args for batchnorm as well'); {_PT2E}/export_utils.py: _replace_batchnorm ('still fails "
        "to support custom momentum and eps') rewrites training=False for eval")),
    "convert_sync_batchnorm": (("conv_bn_subclass", "conv_bn_no_affine"), Cited(
        Survives("converts", kept=ALL, subclass_forward="dropped"),
        f"{_BN}: SyncBatchNorm.convert_sync_batchnorm builds a bare torch.nn.SyncBatchNorm(num_features, eps, "
        "momentum, affine, track_running_stats) for any _BatchNorm instance, copies weight, bias, buffers and "
        "module_output.training = module.training; the subclass's forward is never called")),
}


class TorchFolding(FoldingLane):
    paths = PATHS
    default_momentum = Cited(0.1, f"{_BN}: _NormBase.__init__(momentum: float | None = 0.1)")
    qat_same_padding = Cited("raises:TypeError", f"{_QAT}: ConvBn2d.__init__ applies padding = _pair(padding), which "
                             "turns 'same' into ('s', 'a', 'm', 'e'); from_float passes conv.padding; the first "
                             "forward's F.conv2d then rejects that tuple (TypeError)")

    def run_qat_same_padding(self, x) -> str:
        import torch
        from torch.ao.quantization import fuse_modules_qat, get_default_qat_qconfig, prepare_qat

        m = torch.nn.Sequential(torch.nn.Conv2d(x.shape[1], 8, 3, padding="same"), torch.nn.BatchNorm2d(8)).train()
        try:
            q = fuse_modules_qat(m, [["0", "1"]])
            q.qconfig = get_default_qat_qconfig("x86")
            prepare_qat(q)(torch.from_numpy(np.ascontiguousarray(x)))
        except Exception as e:  # the declared refusal, or another error, observed by its type
            return f"raises:{type(e).__name__}"
        return "runs"

    def versions(self) -> dict[str, str]:
        import torch

        out = {"torch": torch.__version__}
        try:
            import torchao

            out["torchao"] = torchao.__version__
        except ImportError as e:
            out["torchao"] = f"not installed ({e})"
        return out

    def run(self, path, model, *, batches, x, eps, momentum, lr, weights) -> Outcome:
        import torch

        torch.manual_seed(0)
        self.lr = lr
        m = build(model, weights, eps, momentum)
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        for xb, tb in batches:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(m(torch.from_numpy(xb)), torch.from_numpy(tb)).backward()
            opt.step()
        m.eval()
        xt = torch.from_numpy(np.ascontiguousarray(x))
        trained = {k: _np(v) for k, v in tensors(m.mods, model).items() if v is not None}
        with torch.no_grad():
            if self.paths[path][1].value.stats_move:
                # the eager counterpart of a path whose training-mode forward on x moves the statistics
                e = copy.deepcopy(m).train()
                e(xt)
                y_eager = _np(e.eval()(xt))
            else:
                y_eager = _np(m(xt))
        bn = m.mods["bn"]
        out = Outcome(weights=trained, attrs_before=bn_attrs(bn), attrs_after=None, y_eager=y_eager,
                      y=y_eager, train_model="")
        getattr(self, "_" + path)(m, model, xt, out, batches)
        return out

    # -- folding ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _train_model(fn, m) -> str:
        """What a fusion does to the model in train mode (run on a copy)."""
        t = copy.deepcopy(m).train()
        try:
            fn(t)
        except Exception as e:  # the declared refusal; anything else is observed and compared as text
            return f"raises:{type(e).__name__}"
        return "fuses"

    def _folded(self, m, xt, out, fn):
        import torch

        out.train_model = self._train_model(fn, m)
        f = fn(copy.deepcopy(m))
        with torch.no_grad():
            out.y = _np(f(xt))
        bns = [mod for mod in f.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
        out.attrs_after = bn_attrs(bns[0]) if bns else None

    def _fused_into(self, m, xt, out, layer, fuse):
        """The model with `fuse(layer, bn)` in place of `layer` and an Identity in place of its BatchNorm."""
        import torch

        def fn(r):
            r.mods[layer] = fuse(r.mods[layer], r.mods["bn"])
            r.mods["bn"] = torch.nn.Identity()
            return r

        self._folded(m, xt, out, fn)

    def _fuse_conv_bn_eval(self, m, model, xt, out, batches):
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self._fused_into(m, xt, out, "conv", fuse_conv_bn_eval)

    def _fuse_linear_bn_eval(self, m, model, xt, out, batches):
        from torch.nn.utils.fusion import fuse_linear_bn_eval

        self._fused_into(m, xt, out, "linear", fuse_linear_bn_eval)

    def _fuse_modules(self, m, model, xt, out, batches):
        from torch.ao.quantization import fuse_modules

        self._folded(m, xt, out, lambda r: fuse_modules(r, [["mods.conv", "mods.bn"]]))

    def _fuse_fx(self, m, model, xt, out, batches):
        from torch.ao.quantization.quantize_fx import fuse_fx

        self._folded(m, xt, out, fuse_fx)

    def _fx_optimization_fuse(self, m, model, xt, out, batches):
        from torch.fx.experimental.optimization import fuse

        self._folded(m, xt, out, fuse)

    # -- quantization-aware training -------------------------------------------------------------------------------
    def _qat(self, m, xt, out, freeze: bool, fuse=("mods.conv", "mods.bn")):
        import torch
        from torch.ao.nn.intrinsic import qat as nniqat
        from torch.ao.quantization import fuse_modules_qat, get_default_qat_qconfig, prepare_qat

        q = fuse_modules_qat(copy.deepcopy(m).train(), [list(fuse)])
        q.qconfig = get_default_qat_qconfig("x86")
        q = prepare_qat(q)
        q.apply(nniqat.freeze_bn_stats if freeze else nniqat.update_bn_stats)
        out.train_model = "qat"
        conv = q.mods["conv"]
        out.attrs_after = bn_attrs(conv.bn)
        out.stats_before = (_np(conv.bn.running_mean), _np(conv.bn.running_var))
        with torch.no_grad():
            out.y_train = _np(q(xt))
        out.stats_after = (_np(conv.bn.running_mean), _np(conv.bn.running_var))
        out.quant_steps = {"weight": _np(conv.weight_fake_quant.scale),
                           "output": float(conv.activation_post_process.scale),
                           "output_range": _range(conv.activation_post_process)}
        q.eval()
        with torch.no_grad():
            out.y = _np(q(xt))
        out.quant_steps["output"] = max(out.quant_steps["output"], float(conv.activation_post_process.scale))
        out.quant_steps["eval_output_range"] = _range(conv.activation_post_process)
        out.quant_steps["input"] = 0.0  # eager QAT quantizes no model input without a QuantStub

    def _qat_update_bn_stats(self, m, model, xt, out, batches):
        self._qat(m, xt, out, freeze=False)

    def _qat_freeze_bn_stats(self, m, model, xt, out, batches):
        self._qat(m, xt, out, freeze=True)

    def _qat_relu_update_bn_stats(self, m, model, xt, out, batches):
        self._qat(m, xt, out, freeze=False, fuse=("mods.conv", "mods.bn", "mods.relu"))

    def _qat_relu_freeze_bn_stats(self, m, model, xt, out, batches):
        self._qat(m, xt, out, freeze=True, fuse=("mods.conv", "mods.bn", "mods.relu"))

    def _qat_convert(self, m, model, xt, out, batches):
        """The network with quantization stubs, fused conv-BN-relu, QAT-trained one SGD step per batch, calibrated on
        the checked input in eval mode (as a representative dataset is), then converted to int8."""
        import torch
        from torch.ao.quantization import convert, fuse_modules_qat, get_default_qat_qconfig, prepare_qat

        attrs = bn_attrs(m.mods["bn"])
        q = fuse_modules_qat(quantizable_net(copy.deepcopy(m).train()), [["conv", "bn", "relu"]])
        q.qconfig = get_default_qat_qconfig("x86")
        q = prepare_qat(q)
        opt = torch.optim.SGD(q.parameters(), lr=self.lr)
        for xb, tb in batches:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(q(torch.from_numpy(xb)), torch.from_numpy(tb)).backward()
            opt.step()
        out.train_model = "qat"
        q.eval()
        with torch.no_grad():
            q(xt)
        out.weights = {k: _np(v) for k, v in net_tensors(q).items()}
        eager = build(model, out.weights, attrs["eps"], attrs["momentum"]).eval()
        i8 = convert(q)
        with torch.no_grad():
            out.y_eager, out.y = _np(eager(xt)), _np(i8(xt))
        out.converted = {"conv.kernel": _np(i8.conv.weight().dequantize()), "conv.bias": _np(i8.conv.bias()),
                         "dense.kernel": _np(i8.dense.weight().dequantize()), "dense.bias": _np(i8.dense.bias())}
        ranges = {"input": _q_range(i8.quant), "relu": _q_range(i8.conv), "dense": _q_range(i8.quant_dense)}
        out.quant_steps = {"input": float(i8.quant.scale), "weight": _np(i8.conv.weight().q_per_channel_scales()),
                           "output": float(i8.conv.scale), "dense_input": float(i8.quant_dense.scale),
                           "dense_weight": _np(i8.dense.weight().q_per_channel_scales()),
                           "dense_output": float(i8.dense.scale), "ranges": ranges,
                           "weight_qrange": _int_range(i8.conv.weight()),
                           "eval_output_range": _q_range(i8.dense)}

    def _pt2e_qat(self, m, model, xt, out, batches):
        import torch
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)

        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
        src = copy.deepcopy(m).train()
        with _legacy_tf32_readable():
            gm = prepare_qat_pt2e(torch.export.export(src, (xt,)).module(), quantizer)
        out.train_model = "qat"
        rm, rv = (dict(gm.named_buffers())[f"mods.bn.running_{s}"] for s in ("mean", "var"))
        out.stats_before = (_np(rm), _np(rv))
        with torch.no_grad():
            out.y_train = _np(gm(xt))
        out.stats_after = (_np(rm), _np(rv))
        train_range = _graph_steps(gm)["output_range"]
        with _legacy_tf32_readable():
            move_exported_model_to_eval(gm)
        with torch.no_grad():
            out.y = _np(gm(xt))
        out.attrs_after = _graph_bn_attrs(gm)
        out.quant_steps = {**_graph_steps(gm), "output_range": train_range}
        out.quant_steps["eval_output_range"] = _graph_steps(gm)["output_range"]

    # -- conversions -----------------------------------------------------------------------------------------------
    def _convert_sync_batchnorm(self, m, model, xt, out, batches):
        import torch

        out.train_model = "converts" if isinstance(
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(m).train()).mods["bn"],
            torch.nn.SyncBatchNorm) else "keeps"
        s = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(m))
        out.attrs_after = bn_attrs(s.mods["bn"])
        with torch.no_grad():
            out.y = _np(s(xt))


def _graph_bn_attrs(gm) -> dict:
    """eps, momentum and training of the (first) aten batch_norm node: aten.batch_norm(input, weight, bias,
    running_mean, running_var, training, momentum, eps, cudnn_enabled)."""
    import torch

    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.batch_norm.default:
            a = node.args
            return {"eps": float(a[7]), "momentum": float(a[6]), "training": bool(a[5]), "affine": a[1] is not None,
                    "track_running_stats": a[3] is not None}
    raise AssertionError("no aten.batch_norm node in the prepared graph")


def _graph_steps(gm) -> dict:
    """The fake quantizers' steps: the one on the conv's input, on its weight (per channel) and on the output."""
    import torch

    mods = dict(gm.named_modules())
    steps: dict = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.conv2d.default:
            for key, arg in (("input", node.args[0]), ("weight", node.args[1])):
                if arg.op == "call_module":
                    steps[key] = _np(mods[arg.target].scale).reshape(-1)
        if node.op == "output":
            arg = node.args[0][0] if isinstance(node.args[0], (tuple, list)) else node.args[0]
            if arg.op == "call_module":
                steps["output"] = float(_np(mods[arg.target].scale).max())
                steps["output_range"] = _range(mods[arg.target])
    steps["input"] = float(np.max(steps.get("input", 0.0)))
    return steps


def _q_range(mod) -> tuple[float, float]:
    """The values a converted module's quint8 output can hold: (0 - zero_point) * scale to (255 - zero_point) *
    scale (the observers' reduced range only picks the scale; the quantized tensor saturates at its dtype's ends)."""
    scale, zp = float(mod.scale), int(mod.zero_point)
    return (-zp * scale, (255 - zp) * scale)


def _int_range(qtensor) -> tuple[int, int]:
    """The integers a quantized tensor's dtype holds (qint8: -128 to 127)."""
    import torch

    info = torch.iinfo(qtensor.int_repr().dtype)
    return (info.min, info.max)


def _range(fq) -> tuple[float, float]:
    """The values a per-tensor fake quantizer can output: (quant_min - zero_point) * scale to (quant_max - ...)."""
    scale, zp = float(fq.scale.reshape(-1)[0]), int(fq.zero_point.reshape(-1)[0])
    return ((fq.quant_min - zp) * scale, (fq.quant_max - zp) * scale)


class _legacy_tf32_readable:
    """torch.export reads the legacy torch.backends.cudnn.allow_tf32, which raises once cuDNN's conv and RNN
    precision were set through the per-backend API (the suite's numeric settings do): set them back to the legacy
    default for the export only. cuDNN is a GPU library, so on the CPU no number changes."""

    def __enter__(self):
        import torch

        self.cudnn = torch.backends.cudnn
        self.kept = None
        if hasattr(self.cudnn, "conv") and hasattr(self.cudnn.conv, "fp32_precision"):
            self.kept = (self.cudnn.conv.fp32_precision, self.cudnn.rnn.fp32_precision)
            self.cudnn.conv.fp32_precision = self.cudnn.rnn.fp32_precision = "tf32"
        return self

    def __exit__(self, *exc):
        if self.kept is not None:
            self.cudnn.conv.fp32_precision, self.cudnn.rnn.fp32_precision = self.kept
        return False
