"""Keras normalization layers: Keras 3 (every backend) and tf_keras.

Keras 3: LayerNormalization, RMSNormalization, GroupNormalization; InstanceNorm is GroupNormalization(groups=-1)
(documented in its docstring). tf_keras: LayerNormalization and GroupNormalization (no RMSNormalization). Keras
normalization layers have no running statistics, so training and inference are the same function; `training` is
still passed, as a user's model passes it.
"""

from __future__ import annotations

import warnings

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported, in_range, installed_version
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec, no_running_stats

_K3 = "keras/src/layers/normalization"
_GN_DOC = ("GroupNormalization docstring: 'Relation to Instance Normalization: If the number of groups is set to the "
           "input dimension ... Instance Normalization. You can achieve this via groups=-1'")


def _keras3_declaration(backend: str) -> NormDeclaration:
    moments = {"tensorflow": ("two-pass", "keras/src/backend/tensorflow/nn.py: moments -> tf.nn.moments "
                                          "(mean of squared_difference)"),
               "jax": ("two-pass", "keras/src/backend/jax/nn.py: moments -> jnp.var"),
               "torch": ("one-pass", "keras/src/backend/torch/nn.py: moments, 'Var = E[|x|^2] - |E[x]|^2' "
                                     "(unclamped)")}[backend]
    layer_var = ("two-pass", "keras/src/ops/nn.py: _layer_normalization calls torch.nn.functional.layer_norm on the "
                             "torch backend (contiguous axes)") if backend == "torch" else moments
    if backend == "torch" and installed_version("keras") and in_range(installed_version("keras"), "<3.11"):
        # LayerNormalization called ops.moments (one-pass on torch) until ops.layer_normalization arrived in 3.11.0.
        layer_var = ("one-pass", "[keras <3.11] LayerNormalization.call computes ops.moments, one-pass unclamped on the "
                                 "torch backend, before commit 86638c23fe 'add ops.layer_normalization' (#21327), "
                                 "first released in 3.11.0")
    bitwise = {"tensorflow": (False, "not bitwise: TF's CPU reductions (Eigen) vectorize and split the reduced "
                                     "axes by tensor shape, so a row rounds differently in batches of 1, 3 and 8 "
                                     "(observed up to 7e-7 on tensorflow 2.21 CPU)"),
               "jax": (False, "not bitwise: op-by-op XLA kernels compiled per input shape round the reductions "
                              "differently for batch 1 and batch 8 (observed on jax 0.10 CPU)"),
               "torch": (True, "torch CPU kernels reduce each row on its own; observed bitwise on torch 2.13")}[backend]
    return NormDeclaration(
        framework=f"keras 3 ({backend})",
        kinds={
            "layer": Cited(NormFacts("keras.layers.LayerNormalization", 1e-3, "last", True, layer_var[0],
                                     bitwise[0]),
                           f"{_K3}/layer_normalization.py: LayerNormalization.__init__(axis=-1, epsilon=1e-3, "
                           f"center=True, scale=True); {layer_var[1]}; {bitwise[1]}"),
            "rms": Cited(NormFacts("keras.layers.RMSNormalization", 1e-6, "last", True, "mean-square", bitwise[0]),
                         f"{_K3}/rms_normalization.py: RMSNormalization.__init__(axis=-1, epsilon=1e-6), scale "
                         f"weight 'scale'; keras/src/ops/nn.py: _rms_normalization; {bitwise[1]}"),
            "group": Cited(NormFacts("keras.layers.GroupNormalization(groups)", 1e-3, "channels-last", True,
                                     moments[0], bitwise[0]),
                           f"{_K3}/group_normalization.py: GroupNormalization.__init__(groups=32, axis=-1, "
                           f"epsilon=1e-3, center=True, scale=True); {moments[1]}; {bitwise[1]}"),
            "instance": Cited(NormFacts("keras.layers.GroupNormalization(groups=-1)", 1e-3, "channels-last", True,
                                        moments[0], bitwise[0]),
                              f"{_K3}/group_normalization.py: {_GN_DOC}; defaults as GroupNormalization; "
                              f"{moments[1]}; {bitwise[1]}"),
        },
        group_layout=Cited("contiguous", f"{_K3}/group_normalization.py: _reshape_into_groups inserts (groups, "
                                         "C // groups) at the channel axis: consecutive channels share a group"),
        group_layouts=Cited(("channels-first", "channels-last"),
                            f"{_K3}/group_normalization.py: GroupNormalization(axis=-1) by default; any axis"),
        **no_running_stats(f"{_K3}/group_normalization.py: no running statistics"),
        layer_rms_scaling=Cited("variance", f"{_K3}/layer_normalization.py: LayerNormalization(rms_scaling=True) is "
                                            "deprecated with a warning: it 'incorrectly scales the input by the "
                                            "variance, not the root mean square'; keras/src/ops/nn.py: "
                                            "_layer_normalization, rms_scaling: rsqrt(var(x) + epsilon), no offset"),
    )


_TFK = "tf_keras/src/layers/normalization"
TF_KERAS_DECLARATION = NormDeclaration(
    framework="tf_keras",
    kinds={
        "layer": Cited(NormFacts("tf_keras.layers.LayerNormalization", 1e-3, "last", True, "two-pass", True),
                       f"{_TFK}/layer_normalization.py: LayerNormalization.__init__(axis=-1, epsilon=1e-3); call uses "
                       "tf.compat.v1.nn.fused_batch_norm on the rows when _fused_can_be_used (last axes, epsilon >= "
                       "1.001e-5), else tf.nn.moments (two-pass); each row reduced on its own, observed bitwise on "
                       "tensorflow 2.21 CPU"),
        "group": Cited(NormFacts("tf_keras.layers.GroupNormalization(groups)", 1e-3, "channels-last", True,
                                 "two-pass", False),
                       f"{_TFK}/group_normalization.py: GroupNormalization.__init__(groups=32, axis=-1, "
                       "epsilon=1e-3); _apply_normalization: tf.nn.moments (two-pass); not bitwise: TF's CPU "
                       "reductions (Eigen) split the reduced axes by tensor shape (observed up to 7e-7 between batches "
                       "of 1, 3 and 8 on tensorflow 2.21 CPU)"),
        "instance": Cited(NormFacts("tf_keras.layers.GroupNormalization(groups=-1)", 1e-3, "channels-last", True,
                                    "two-pass", False),
                          f"{_TFK}/group_normalization.py: build: 'if self.groups == -1: self.groups = dim'; "
                          "tf.nn.moments (two-pass); not bitwise, as GroupNormalization"),
    },
    missing={"rms": "tf_keras has no RMSNormalization layer (tf_keras/src/layers/normalization/: batch, group, layer, "
                    "spectral and unit normalization only)"},
    group_layout=Cited("contiguous", f"{_TFK}/group_normalization.py: _reshape_into_groups inserts (groups, "
                                     "C // groups) at the channel axis"),
    group_layouts=Cited(("channels-first", "channels-last"), f"{_TFK}/group_normalization.py: axis=-1 by default"),
    **no_running_stats(f"{_TFK}/group_normalization.py: no running statistics"),
    layer_rms_scaling=Cited(None, f"{_TFK}/layer_normalization.py: LayerNormalization has no rms_scaling argument"),
)


class _KerasNorms(NormAdapter):
    def _layers(self):
        raise NotImplementedError

    def __init__(self, spec: NormSpec):
        super().__init__(spec)
        layers = self._layers()
        kw = self.options("epsilon", *() if spec.kind == "rms" else ("center", "scale"))
        if spec.kind in ("group", "instance"):
            kw["axis"] = -1 if spec.channels_last else 1
            kw["groups"] = spec.groups if spec.kind == "group" else -1
        if spec.rms_scaling:
            kw["rms_scaling"] = True
        make = {"layer": "LayerNormalization", "rms": "RMSNormalization", "group": "GroupNormalization",
                "instance": "GroupNormalization"}[spec.kind]
        self.kwargs, self.cls_name = kw, make
        if not hasattr(layers, make):  # RMSNormalization arrived in Keras 3.9.0
            raise Unsupported(f"this release has no layers.{make}")
        with warnings.catch_warnings():  # rms_scaling=True warns that it is deprecated; the suite checks what it does
            warnings.simplefilter("ignore")
            self.layer = getattr(layers, make)(dtype=spec.dtype, **kw)
        shape = (2, 4, 4, spec.num_features) if spec.rank == 4 and spec.channels_last else \
            (2, spec.num_features, 4, 4) if spec.rank == 4 else (2, spec.num_features)
        self.layer.build(shape)

    def _weights(self):
        if self.cls_name == "RMSNormalization":
            return getattr(self.layer, "scale", None), None
        return getattr(self.layer, "gamma", None), getattr(self.layer, "beta", None)

    def get_params(self):
        return tuple(None if w is None else np.asarray(self._numpy(w), np.float64) for w in self._weights())

    def set_params(self, scale, offset) -> None:
        for w, v in zip(self._weights(), (scale, offset)):
            if w is not None and v is not None:
                w.assign(np.asarray(v, self.spec.dtype))

    def snippet(self) -> str:
        return f"layer = {self.module_name}.layers.{self.cls_name}({self.kwargs})  # spec {self.spec}"


class Keras3Norms(_KerasNorms):
    framework = "keras"
    module_name = "keras"

    @classmethod
    def declare(cls) -> NormDeclaration:
        import keras

        return _keras3_declaration(keras.backend.backend())

    def _layers(self):
        import keras

        self.keras = keras
        return keras.layers

    def _numpy(self, t):
        return self.keras.ops.convert_to_numpy(t)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = self.layer(np.asarray(x, self.spec.dtype), training=training)
        return np.asarray(self._numpy(y), np.float64)


class TfKerasNorms(_KerasNorms):
    framework = "tf_keras"
    module_name = "tf_keras"
    declaration = TF_KERAS_DECLARATION

    def _layers(self):
        import tensorflow as tf
        import tf_keras

        self.tf = tf
        return tf_keras.layers

    def _numpy(self, t):
        return np.asarray(t)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = self.layer(self.tf.constant(np.asarray(x, self.spec.dtype)), training=training)
        return np.asarray(y, np.float64)
