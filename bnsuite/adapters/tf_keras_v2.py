"""tf_keras adapters: the legacy Keras 2 BatchNormalization layers that ship as the `tf_keras` package.

`TfKerasV2` wraps the TF2 (V2) layer, ``tf_keras.layers.BatchNormalization``. The TF1 (V1) layer shares this code
through ``TfKerasLayerBase`` (see adapters/tf1.py). Sources: keras-team/tf-keras @ dd0a7237
(tf_keras/layers/normalization/batch_normalization.py, abbreviated BN below).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Declaration, DtypeRule, FreezeFacts
from bnsuite.adapters.conventions import build_shape
from bnsuite.adapters.frameworks import Framework, OnFramework
from bnsuite.adapters.keras_family import KerasLayerAdapter, keras_api_declaration, tf_dtype_name, tf_gpu_reason
from bnsuite.adapters.mixed_precision import keras_mixed
from bnsuite.adapters import numerics

BN = "tf_keras/layers/normalization/batch_normalization.py"

FUSED_NOTE = (
    "The fused kernel (tf.compat.v1.nn.fused_batch_norm, used by default for rank-4 and rank-5 inputs with the "
    f"channel on axis 1 or -1) feeds the moving variance with Bessel's correction (n/(n-1)); the non-fused path "
    f"(ranks 2 and 3, or fused=False) feeds it the biased variance. {BN}: _fused_batch_norm and "
    "_maybe_add_or_remove_bessels_correction; tensorflow/core/kernels/fused_batch_norm_op.cc applies "
    "sample_size / (sample_size - 1) to the running variance.")


def tf_keras_precision() -> dict:
    """tf_keras BatchNormalization (V1, V2 and the legacy tf.compat.v1.layers function share BatchNormalizationBase)."""
    params = f"{BN}: _param_dtype, 'Raise parameters of fp16 batch norm to fp32' (float16/bfloat16 -> float32)"
    math = (f"{BN}: call(), non-fused path 'Do all math in float32 if given 16-bit inputs' then "
            "tf.cast(outputs, inputs_dtype); fused path _fused_batch_norm -> FusedBatchNormV3 with float32 "
            "scale/mean/variance (tensorflow/core/kernels/fused_batch_norm_op.cc: U = float)")
    low = lambda dt: Cited(DtypeRule("yes", output=dt, stats="float32", state="float32"), f"{params}; {math}")
    return {"float16": low("float16"), "bfloat16": low("bfloat16"),
            "float64": Cited(DtypeRule("yes", output="float64", stats="float64", state="float64"),
                             f"{params} (float64 kept); {BN}: _fused_can_be_used is False for float64, so the "
                             "non-fused path computes in float64")}


def tf_keras_declaration(v2: bool, framework: str, layer_src: str) -> Declaration:
    """Shared by the V2 and V1 layers; they differ only in what `trainable=False` means."""
    if v2:
        frozen_true = Cited(FreezeFacts("running", False, False),
                            f"{BN}: _get_training_value, 'if not self.trainable: training = False' "
                            "(V2 behaviour since TF 2.0; docstring 'About setting layer.trainable = False')")
    else:
        # V1 does not force inference; in TF2 eager execution its updates are callables, and callable updates are
        # disabled for a frozen layer: batch statistics, but they do not move. (A TF1 graph: see adapters/tf1.py.)
        frozen_true = Cited(FreezeFacts("batch", False, False),
                            "tf_keras/layers/normalization/batch_normalization_v1.py: _USE_V2_BEHAVIOR = False; "
                            "tf_keras/engine/base_layer.py: add_update, '# Callable updates are disabled by setting "
                            "trainable=False.' `if not call_context.frozen:`")
    return keras_api_declaration(
        layer_src, BN,
        freeze={
            "trainable_false_training_true": frozen_true,
            "trainable_false_training_false": Cited(FreezeFacts("running", False, False), f"{BN}: call()"),
            "trainable_false_training_omitted": Cited(FreezeFacts("running", False, False), f"{BN}: call()"),
            "trainable_false_fit": Cited(frozen_true.value, "fit() calls the layer with training=True: "
                                         + frozen_true.source),
            "subclassed_training_false_fit": Cited(FreezeFacts("running", False, True),
                                                   f"{BN}: training=False uses moving statistics; gamma/beta train"),
            "functional_training_false_fit": Cited(
                FreezeFacts("running", False, True),
                "tf_keras/engine/functional.py: a layer's recorded call kwargs (training=False) are kept when the "
                "model runs under fit; unlike Keras 3 (see adapters/keras3.py)"),
        },
        precision=tf_keras_precision(),
        mixed_precision=keras_mixed.declared_tf_keras(),
        framework=framework,
        momentum_weights=Cited("old", f"{BN}: _assign_moving_average, "
                                      "variable * decay + value * (1 - decay) with decay = momentum"),
        running_var_estimator=Cited({"fused": "unbiased", "non-fused": "biased"}, FUSED_NOTE),
        normalize_estimator=Cited("biased", f"{BN}: _moments -> tf.nn.moments; fused kernel normalizes with "
                                            "the batch variance divided by n"),
        single_value_batch=Cited("offset", f"{BN}: no batch-size check; variance 0 gives output beta; the fused "
                                           "kernel guards the n/(n-1) factor for n = 1"),
        variance_algorithm=Cited("two-pass", "tensorflow/core/kernels/fused_batch_norm_op.cc: x_centered = x - mean, "
                                             "then the mean of its square; non-fused: tensorflow/python/ops/nn_impl.py "
                                             "moments, reduce_mean(squared_difference(y, mean))"),
        training_default=Cited("inference", f"{BN}: _get_training_value, training=None -> "
                                            "backend.learning_phase() which is 0 outside fit()"),
        notes={"running_var_estimator": FUSED_NOTE},
    )


def tf_versions() -> dict[str, str]:
    import tensorflow as tf
    import tf_keras

    return {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}


# TensorFlow with tf_keras: the V2 and V1 layers and the TF1 graph (adapters/tf1.py). All four dtypes run, bfloat16
# included (the TF1 graph builds and runs it like tf_keras: float32 math and parameters).
TF_KERAS = Framework(requires=("tf_keras", "tensorflow"), families=("tensorflow",),
                     pins={"tensorflow": "2.21.0", "tf_keras": "2.21.0"}, versions=tf_versions,
                     numeric_settings=numerics.tensorflow_full_fp32, device_reason=tf_gpu_reason)


class TfKerasLayerBase(OnFramework, KerasLayerAdapter):
    """Layers with the tf_keras BatchNormalization API (V1 and V2): TensorFlow tensors, devices and autodiff."""

    runs_on = TF_KERAS
    capabilities = {
        "network": "bnsuite.adapters.nets.keras_net:build",
        "mixed_precision": "bnsuite.adapters.mixed_precision.keras_mixed:tf_keras_step",
        "training_loops": "bnsuite.lanes.loops.keras_loops:TfKerasLoops",
    }
    framework_name = "tf_keras"

    def __init__(self, spec):
        import tensorflow as tf

        self.tf = tf
        self._device = "/GPU:0" if spec.device == "gpu" else "/CPU:0"
        super().__init__(spec)

    # -- edge inputs: tf_keras names (the shared methods are in KerasLayerAdapter) ------------------------------------
    def _mask_in(self, mask):
        return self.tf.convert_to_tensor(np.asarray(mask, bool))

    def rebuild_with_virtual_batch_size(self, virtual_batch_size):
        shape = [None] * self.spec.rank
        shape[self.spec.channel_axis] = self.spec.num_features
        self._rebuild(shape, virtual_batch_size=virtual_batch_size)

    # -- the tf_keras names --------------------------------------------------------------------------------------------
    def _keras(self):
        import tf_keras

        return tf_keras

    def _scope(self):
        return self.tf.device(self._device)

    def _build_input_shape(self):
        return self.tf.TensorShape(build_shape(self.spec))

    def _in(self, x):
        return self.tf.convert_to_tensor(np.asarray(x), dtype=self.spec.dtype)

    def _to_numpy(self, t):
        return t.numpy()

    def _reduce_sum(self, t):
        return self.tf.reduce_sum(t)

    def _numpy_dtype(self, var):
        return var.dtype.as_numpy_dtype

    def _var_dtype(self, var):
        return tf_dtype_name(var)

    def _grads(self, x, dy, training, params):
        return self._grads_tape(x, dy, training, params)

    def code_path(self, x_shape) -> str:
        # The layer decides at build time; `fused` is its own record of the decision.
        return "fused" if self.layer.fused else "non-fused"


class TfKerasV2(TfKerasLayerBase):
    id = "tf_keras"
    capabilities = {**TfKerasLayerBase.capabilities, "norms": "bnsuite.adapters.norms.keras_norms:TfKerasNorms",
                    "blocks": "bnsuite.adapters.blocks.keras_blocks:TfKerasBlocks",
                    "replicas": "bnsuite.adapters.replicas.tf_mirrored:TfKerasReplicas",
                    "edge_facts": "bnsuite.adapters.edge_facts:TF_KERAS_V2",
                    "deploy": "bnsuite.lanes.deploy.keras_deploy:TfKerasDeploy",
                    "compile": "bnsuite.lanes.compile.keras_compile:TfKerasCompile",
                    "models": "bnsuite.models.keras_models:TF_KERAS_MODELS"}
    snippet_head = "import tf_keras\n"
    snippet_class = "tf_keras.layers.BatchNormalization"

    @classmethod
    def declare(cls):
        return tf_keras_declaration(True, "tf_keras (TF2 layer)", BN)

    def _layer_class(self):
        import tf_keras

        return tf_keras.layers.BatchNormalization
