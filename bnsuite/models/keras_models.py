"""keras.applications (Keras 3, any backend) and tf_keras.applications with weights=None, plus a ResNet-18 written in
the functional API layer for layer like torchvision's (Keras ships no ResNet-18), the target of the porting demo.

The applications' BatchNormalization layers are collected with momentum 0 for the collection forwards (each layer's
running statistics become those of the last collection batch), then their own momentum is restored.
"""

from __future__ import annotations

import importlib

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.models import CLASSES, IMAGE, Moves, stat_batches

_APP = "keras/src/applications/{}.py: {}(weights=None, include_top=False) + pooling + Dense head"
_BN = "keras/src/layers/normalization/batch_normalization.py: BatchNormalization.call"


class KerasModels:
    channels_last = True

    def __init__(self, package: str):
        self.package = package  # "keras" or "tf_keras"
        self.framework = package
        self._collected: dict = {}  # (arch, seed) -> the base's weights after the collection forwards
        self.architectures = {
            "resnet50": Cited("ResNet50", _APP.format("resnet", "ResNet50")),
            "densenet121": Cited("DenseNet121", _APP.format("densenet", "DenseNet121")),
            "mobilenet_v2": Cited("MobileNetV2", _APP.format("mobilenet_v2", "MobileNetV2")),
            "mobilenet_v3": Cited("MobileNetV3Small", _APP.format("mobilenet_v3", "MobileNetV3Small")),
            "efficientnet_b0": Cited("EfficientNetB0", _APP.format("efficientnet", "EfficientNetB0")),
            "resnet18": Cited("resnet18", "bnsuite/models/keras_models.py: resnet18 (torchvision's layout, "
                              "functional API)"),
        }
        self.freeze_idioms = {
            "transfer_learning": Cited(Moves("none", "none", "none"),
                                       f"{_BN}: `training and self.trainable` is False for base_model.trainable = "
                                       "False, and base_model(inputs, training=False) pins inference; no trainable "
                                       "weights in the base (Keras transfer-learning guide's idiom)"),
            "trainable_false_only": Cited(Moves("none", "none", "none"),
                                          f"{_BN}: a non-trainable BatchNormalization runs in inference mode even "
                                          "when fit() calls it with training=True"),
            "training_false_only": Cited(Moves("all", "all", "all"),
                                         "keras/src/models/functional.py: operation_fn writes fit's training=True "
                                         "over the training=False recorded for base_model(inputs, training=False) "
                                         "(finding keras3_functional_fit_overrides_training_false)")
            if package == "keras" else
            Cited(Moves("none", "all", "all"), "tf_keras/src/engine/functional.py: the recorded training=False is "
                  "kept under fit(); the moving statistics do not update, gamma and beta take the gradient"),
            "fine_tune_all": Cited(Moves("all", "all", "all"),
                                   f"{_BN}: fit() calls with training=True; the moving statistics update and gamma, "
                                   "beta train"),
        }

    @property
    def K(self):
        return importlib.import_module(self.package)

    def versions(self) -> dict:
        K = self.K
        v = {self.package: K.__version__}
        if self.package == "keras":
            v["backend"] = K.backend.backend()
        return v

    def _base(self, arch: str, init):
        K = self.K
        if arch == "resnet18":
            return resnet18_base(K, kernel_initializer=init)
        kw = {"include_preprocessing": False} if arch == "mobilenet_v3" else {}
        return getattr(K.applications, self.architectures[arch].value)(
            weights=None, include_top=False, input_shape=(IMAGE, IMAGE, 3), **kw)

    def build(self, arch: str, seed: int = 0, idiom: str | None = None):
        """base -> global average pool -> Dense; `idiom` (a freeze idiom) wires the base the way the idiom does."""
        K = self.K
        # ResNet-18 (bnsuite's own) draws every kernel from NumPy; the applications use Keras' seeded initializers
        # (on a Keras 3 backend other than TensorFlow, set_random_seed imports TensorFlow to seed it too)
        init = NumpyGlorotUniform(seed) if arch == "resnet18" else None
        if init is None:
            K.utils.set_random_seed(seed)
        base = self._base(arch, init)
        # The collected weights (statistics included) of an (arch, seed) are the same for every build of the process:
        # collected once, copied into each later base.
        collected = self._collected.get((arch, seed))
        if collected is None:
            self._collect(base, seed)
            self._collected[(arch, seed)] = base.get_weights()
        else:
            base.set_weights(collected)
        if idiom in ("transfer_learning", "trainable_false_only"):
            base.trainable = False
        inputs = K.Input((IMAGE, IMAGE, 3))
        h = base(inputs, training=False) if idiom in ("transfer_learning", "training_false_only") else base(inputs)
        h = K.layers.GlobalAveragePooling2D()(h)
        model = K.Model(inputs, K.layers.Dense(CLASSES, name="head", kernel_initializer=init or "glorot_uniform")(h))
        model.base = base
        return model

    def _on_jax(self) -> bool:
        return self.package == "keras" and self.K.backend.backend() == "jax"

    def _collect(self, base, seed):
        bns = [l for l in base.layers if isinstance(l, self.K.layers.BatchNormalization)]
        momenta = [l.momentum for l in bns]
        for l in bns:
            l.momentum = 0.0
        if self._on_jax():
            # The training-mode forward as one compiled program (Keras' own stateless call, as fit() runs it), not
            # an eager forward that compiles every operation of the model on its own.
            import jax

            step = jax.jit(lambda tv, ntv, x: base.stateless_call(tv, ntv, x, training=True)[1])
            tv = [v.value for v in base.trainable_variables]
            ntv = [v.value for v in base.non_trainable_variables]
            for x in stat_batches(seed):
                ntv = step(tv, ntv, x)
            for v, value in zip(base.non_trainable_variables, ntv):
                v.assign(value)
        else:
            for x in stat_batches(seed):
                base(x, training=True)
        for l, m in zip(bns, momenta):
            l.momentum = m

    def native(self, x: np.ndarray) -> np.ndarray:
        return x

    def infer(self, model, x: np.ndarray) -> np.ndarray:
        if self._on_jax():  # Keras' compiled inference (one program per batch shape), as predict() runs it
            return np.asarray(model.predict_on_batch(x), np.float64)
        y = model(x, training=False)
        return np.asarray(self.K.ops.convert_to_numpy(y) if self.package == "keras" else y.numpy(), np.float64)

    def probe_target(self, model):
        """The probe reads a flat functional model's layers: the base with the pooling and head added to it."""
        K = self.K
        base, head = model.base, model.get_layer("head")
        # A layer called in two graphs has two outputs, so the head is copied; its weights are set from the head
        # below (zeros spare the random initializer: on JAX a compiled random-number program).
        dense = K.layers.Dense(head.units, name="head_copy", kernel_initializer="zeros")
        y = dense(K.layers.GlobalAveragePooling2D()(base.output))
        dense.set_weights(head.get_weights())
        return K.Model(base.input, y)

    def layer_inputs(self, model) -> dict:
        """Layer name -> the name of the layer producing its (first) input, read from the functional graph (its
        layer list is in depth order, so the layer before a BatchNorm there need not feed it)."""
        out = {}
        for layer in model.base.layers:
            try:
                history = getattr(layer.input, "_keras_history", None)
            except Exception:  # an input layer, or a layer with several inputs
                continue
            if history is not None:
                out[layer.name] = history[0].name
        return out

    def fan_ins(self, model) -> list[int]:
        """Terms per output of every convolution and dense kernel (a depthwise kernel: its area)."""
        K = self.K
        out = []
        for layer in [*model.base.layers, model.get_layer("head")]:
            if isinstance(layer, (K.layers.Conv2D, K.layers.DepthwiseConv2D, K.layers.Dense)):
                # tf_keras names a depthwise kernel depthwise_kernel, Keras 3 kernel
                kernel = getattr(layer, "depthwise_kernel", None)
                shape = tuple((layer.kernel if kernel is None else kernel).shape)
                out.append(int(np.prod(shape[:2])) if isinstance(layer, K.layers.DepthwiseConv2D)
                           else int(np.prod(shape[:-1])))
        return out

    def freeze_step(self, model, idiom: str, x: np.ndarray, t: np.ndarray):
        """One fit() step (SGD, lr 0.1, categorical cross-entropy) of a model built with build(..., idiom=idiom)."""
        K = self.K
        model.compile(optimizer=K.optimizers.SGD(learning_rate=0.1),
                      loss=K.losses.CategoricalCrossentropy(from_logits=True))
        model.fit(x, t, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
        return model


class NumpyGlorotUniform:
    """Keras' default kernel initializer (GlorotUniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), fans as
    keras/src/initializers/random_initializers.py compute_fans) drawn by NumPy from `seed`: the same distribution
    without a compiled random-number program per kernel shape on JAX (a dozen for ResNet-18)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, shape, dtype=None, **kwargs):
        shape = tuple(int(d) for d in shape)
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        dtype = getattr(dtype, "as_numpy_dtype", dtype) or "float32"  # tf_keras passes a tf.DType
        return self.rng.uniform(-limit, limit, shape).astype(dtype)


def resnet18_base(K, eps: float = 1e-5, momentum: float = 0.9, kernel_initializer="glorot_uniform"):
    """torchvision's ResNet-18 without its pooling and fc, layer for layer (names follow torchvision's with '.' ->
    '_'): explicit ZeroPadding2D where torch pads symmetrically (Keras "same" pads stride-2 convolutions on one side),
    max pooling after ReLU so zero padding equals torch's -inf padding."""
    L = K.layers

    def conv(h, filters, k, stride, name):
        if k > 1:
            h = L.ZeroPadding2D(k // 2, name=f"{name}_pad")(h)
        return L.Conv2D(filters, k, strides=stride, use_bias=False, name=name,
                        kernel_initializer=kernel_initializer)(h)

    def bn(h, name):
        return L.BatchNormalization(epsilon=eps, momentum=momentum, name=name)(h)

    inputs = K.Input((IMAGE, IMAGE, 3))
    h = L.ReLU(name="relu")(bn(conv(inputs, 64, 7, 2, "conv1"), "bn1"))
    h = L.MaxPooling2D(3, 2, name="maxpool")(L.ZeroPadding2D(1, name="maxpool_pad")(h))
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            p = f"layer{stage}_{block}"
            y = L.ReLU(name=f"{p}_relu1")(bn(conv(h, cout, 3, stride, f"{p}_conv1"), f"{p}_bn1"))
            y = bn(conv(y, cout, 3, 1, f"{p}_conv2"), f"{p}_bn2")
            if stride != 1 or cin != cout:
                h = bn(conv(h, cout, 1, stride, f"{p}_downsample_0"), f"{p}_downsample_1")
            h = L.ReLU(name=f"{p}_relu2")(L.Add(name=f"{p}_add")([y, h]))
            cin = cout
    return K.Model(inputs, h, name="resnet18")


MODELS = KerasModels("keras")
TF_KERAS_MODELS = KerasModels("tf_keras")
