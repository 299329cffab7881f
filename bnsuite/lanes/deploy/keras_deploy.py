"""Keras 3 (TensorFlow backend) and tf_keras into ONNX (Keras' own `model.export(format="onnx")`, tf2onnx) and into
LiteRT (TensorFlow's converter: float32, float16, int8 post-training quantization with a representative dataset).

Models: keras.layers.BatchNormalization alone in a functional model and the suite's conv-BN network
(adapters/nets/keras_net.py), NHWC, trained by calling the layer with training=True (layer) or train_on_batch (network).
Momentum: Keras' weights the OLD value, so the layer gets 1 - MOMENTUM (as adapters/keras3.py does).
"""

from __future__ import annotations

import os
import time

import numpy as np

from bnsuite.adapters.base import Cited, installed_version
from bnsuite.lanes.deploy import CHANNELS, EPS, IMAGE, MOMENTUM, NET_ARCH, DeployLane, Export, ExportFacts, Route

ONNX_RUNTIMES = ("ort-off", "ort-all", "onnx-reference", "openvino")
TFLITE_MODES = ("float32", "float16", "int8")
_TF2ONNX = ("tf2onnx/onnx_opset/nn.py BatchNorm (FusedBatchNormV3 in inference -> BatchNormalization; "
            "tf2onnx/optimizer: a BatchNormalization after Conv is folded into the Conv's weights)")
_TFLITE = ("tensorflow/compiler/mlir/lite: the converter lowers inference BatchNorm to MUL + ADD and fuses them into "
           "a CONV_2D before them")


class _KerasLane(DeployLane):
    source_estimator = Cited("biased", "keras/src/layers/normalization/batch_normalization.py: moments() -> biased "
                             "variance into moving_variance (tf_keras's fused kernel: unbiased, see the finding "
                             "tf_fused_running_variance_unbiased)")
    onnx_exporter = ""

    def _keras(self):
        raise NotImplementedError

    def onnx_bn_node(self, conv_before: bool) -> Cited[str]:
        raise NotImplementedError

    def declared(self, exporter, mode, model):
        conv_before = model == "net"
        if exporter == self.onnx_exporter:
            return ExportFacts(
                statistics=Cited("running", "the inference function is traced with training=False"),
                bn_node=self.onnx_bn_node(conv_before),
                momentum_attr=Cited(None, "tf2onnx writes inference BatchNormalization without momentum: a running "
                                          "statistic is not updated in an inference graph"),
                keeps_state=Cited(True, "an inference trace reads the moving statistics as constants"),
                dynamic_batch=Cited(True, "the input signature's batch dimension is None"))
        if exporter == "tflite":
            return ExportFacts.non_onnx_inference(
                "a .tflite flatbuffer", traced="the converted function is traced with training=False",
                dynamic_batch=Cited(True, "the concrete function's batch dimension is None (shape_signature -1)"),
                precision=Cited(mode, "tf.lite.TFLiteConverter: optimizations=[DEFAULT] with supported_types "
                                      "[tf.float16] stores weights in float16; with a representative_dataset it "
                                      "quantizes weights and activations to int8 (float input and output)"))
        raise KeyError(f"{type(self).__name__}: no exporter {exporter!r}")

    def declared_folding(self, route, model):
        if model == "net":
            return Cited("folded", _TFLITE if route.exporter == "tflite" else _TF2ONNX)
        if route.exporter == "tf2onnx" and not route.runtime.startswith("openvino"):
            return Cited("BatchNorm kept", _TF2ONNX + ": a lone BN stays a BatchNormalization node")
        return Cited("elementwise", "a lone BN lowered to a multiply and an add (" + (
            _TFLITE if route.exporter == "tflite" else "the Mul and Add of the ONNX graph, or OpenVINO's decomposition "
                                                        "of BatchNormalization") + ")")

    def train(self, kind, batches, frozen=False):
        from bnsuite.lanes.deploy import Trained

        K = self._keras()
        t0 = time.perf_counter()
        rng = np.random.default_rng(7)
        if kind == "layer":
            inp = K.Input((*IMAGE, CHANNELS))
            bn = K.layers.BatchNormalization(epsilon=EPS, momentum=1.0 - MOMENTUM)
            model = K.Model(inp, bn(inp))
            bn.set_weights([(1.0 + 0.5 * rng.standard_normal(CHANNELS)).astype(np.float32),
                            rng.standard_normal(CHANNELS).astype(np.float32),
                            np.zeros(CHANNELS, np.float32), np.ones(CHANNELS, np.float32)])
            for x in batches:
                model(np.asarray(x, np.float32), training=True)

            def weights():
                g, b, m, v = (np.asarray(w, np.float64) for w in bn.get_weights())
                return {"bn.scale": g, "bn.offset": b, "bn.mean": m, "bn.var": v}
        else:
            from bnsuite.adapters.nets import build_network, init_weights

            net = build_network(self.adapter_cls, NET_ARCH, init_weights(NET_ARCH), channels_last=True, eps=EPS,
                                momentum=MOMENTUM)
            for x in batches:
                net.sgd_step(x, rng.standard_normal((x.shape[0], 4)), lr=0.1)
            model, weights = net.model, net.get_weights

        def run(x, training):
            saved = model.get_weights()  # a training call moves the moving statistics: put them back
            try:
                out = model(np.asarray(x, np.float32), training=training)
                out = out.detach() if hasattr(out, "detach") else out  # a torch-backend tensor carries its graph
                return np.asarray(out, np.float64)
            finally:
                model.set_weights(saved)

        return Trained(kind, True, lambda x: run(x, False), lambda x: run(x, True), weights(), model,
                       time.perf_counter() - t0)

    def _tflite_converter(self, model):
        """TensorFlow's converter on the Keras model (its inference function, variables frozen into constants)."""
        import tensorflow as tf

        return tf.lite.TFLiteConverter.from_keras_model(model)

    def _onnx(self, model, path):
        raise NotImplementedError

    def export(self, model, exporter, mode, folder, example):
        t0 = time.perf_counter()
        path = os.path.join(folder, f"{exporter}-{mode}-{model.kind}")
        if exporter == self.onnx_exporter:
            self._onnx(model.handle, path + ".onnx")
            return Export(path + ".onnx", "onnx", time.perf_counter() - t0)
        if exporter == "tflite":
            import tensorflow as tf

            conv = self._tflite_converter(model.handle)
            if mode != "float32":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if mode == "float16":
                conv.target_spec.supported_types = [tf.float16]
            elif mode == "int8":
                rep = [np.asarray(example, np.float32)]  # the inputs checked, so the calibration covers them
                conv.representative_dataset = lambda: ([x[i:i + 1]] for x in rep for i in range(x.shape[0]))
            with open(path + ".tflite", "wb") as fh:
                fh.write(conv.convert())
            return Export(path + ".tflite", "tflite", time.perf_counter() - t0)
        raise KeyError(f"{type(self).__name__}: no exporter {exporter!r}")

    def versions(self):
        return {d: installed_version(d) or "not installed" for d in ("tensorflow-cpu", "keras", "tf_keras", "tf2onnx",
                                                                     "onnx", "ai-edge-litert")}


class Keras3Deploy(_KerasLane):
    """Keras 3 on TensorFlow: `model.export(path, format="onnx")` (keras/src/export/onnx.py: tf2onnx for the
    TensorFlow backend)."""

    framework = "keras"
    onnx_exporter = "keras.export-onnx"
    routes = tuple([Route("keras.export-onnx", "eval", rt) for rt in ONNX_RUNTIMES]
                   + [Route("tflite", m, "litert") for m in TFLITE_MODES])

    def _keras(self):
        import keras

        return keras

    def onnx_bn_node(self, conv_before):
        return Cited("none", "keras/src/backend/tensorflow/nn.py batch_normalization: inference BN is computed with "
                             "tf ops ((x - mean) * rsqrt(var + eps) * gamma + beta), which tf2onnx writes as Mul and "
                             "Add" + (" and then folds into the Conv before them" if conv_before else ""))

    def declared_folding(self, route, model):
        if model == "net" and route.exporter == self.onnx_exporter and route.runtime in ("ort-off", "onnx-reference"):
            return Cited("elementwise", "keras/src/backend/tensorflow/nn.py batch_normalization computes inference BN "
                                        "as tf ops; tf2onnx leaves that Mul and Add after the Conv (the graph is "
                                        "Transpose, Conv, Mul, Add, Relu): only an optimizing runtime folds them")
        return super().declared_folding(route, model)

    def _onnx(self, model, path):
        model.export(path, format="onnx", verbose=False)


class TfKerasDeploy(_KerasLane):
    """tf_keras through tf2onnx.convert.from_function."""

    framework = "tf_keras"
    onnx_exporter = "tf2onnx"
    source_estimator = Cited("unbiased", "tf_keras/src/layers/normalization/batch_normalization.py _fused_batch_norm: "
                             "the fused kernel (rank-4 inputs) stores the unbiased variance (the finding "
                             "tf_fused_running_variance_unbiased)")
    routes = tuple([Route("tf2onnx", "eval", rt) for rt in ONNX_RUNTIMES]
                   + [Route("tflite", m, "litert") for m in TFLITE_MODES])

    def _keras(self):
        import tf_keras

        return tf_keras

    def onnx_bn_node(self, conv_before):
        return Cited("none", _TF2ONNX) if conv_before else \
            Cited("BatchNormalization", _TF2ONNX + " (the layer alone: no Conv to fold into)")

    def _onnx(self, model, path):
        import tensorflow as tf
        import tf2onnx

        spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="x"),)
        fn = tf.function(lambda x: model(x, training=False))
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=path)


class Keras3TorchDeploy(_KerasLane):
    """Keras 3 on torch: `model.export(path, format="onnx")` (keras/src/export/onnx.py: torch.onnx.export; the
    input's batch dimension is None, so it takes the TorchScript-based exporter with dynamic_axes, and tries dynamo
    only for static shapes). ONNX only: TensorFlow's LiteRT converter takes TensorFlow models."""

    framework = "keras"
    onnx_exporter = "keras.export-onnx"
    routes = tuple(Route("keras.export-onnx", "eval", rt) for rt in ONNX_RUNTIMES)

    def _keras(self):
        import keras

        return keras

    def onnx_bn_node(self, conv_before):
        return Cited("none", "keras/src/backend/torch/nn.py batch_normalization: inference BN is computed with torch "
                             "ops (x - mean) * (rsqrt(var + eps) * gamma) + beta, which the TorchScript exporter "
                             "writes as Sub, Mul and Add")

    def declared_folding(self, route, model):
        return Cited("elementwise", "keras/src/backend/torch/nn.py batch_normalization: Sub, Mul and Add after the "
                                    "Conv in the ONNX graph (the TorchScript exporter folds only constants)")

    def _onnx(self, model, path):
        model.export(path, format="onnx", verbose=False)

    def versions(self):
        return {d: installed_version(d) or "not installed" for d in ("torch", "keras", "onnx")}
