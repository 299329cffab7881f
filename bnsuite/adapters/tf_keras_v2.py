"""tf_keras adapters: the legacy Keras 2 BatchNormalization layers that ship as the `tf_keras` package.

`TfKerasV2` wraps the TF2 (V2) layer, ``tf_keras.layers.BatchNormalization``. The TF1 (V1) layer shares this code
through ``TfKerasLayerBase`` (see adapters/tf1.py). Sources: keras-team/tf-keras @ dd0a7237
(tf_keras/layers/normalization/batch_normalization.py, abbreviated BN below).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, Grads, State, Unsupported,
                           dtype_name)

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
    return Declaration(
        precision=tf_keras_precision(),
        framework=framework,
        default_eps=Cited(1e-3, f"{layer_src}: __init__(epsilon=1e-3)"),
        default_momentum=Cited(0.99, f"{layer_src}: __init__(momentum=0.99)"),
        momentum_weights=Cited("old", f"{BN}: _assign_moving_average, "
                                      "variable * decay + value * (1 - decay) with decay = momentum"),
        default_channels_last=Cited(True, f"{layer_src}: __init__(axis=-1)"),
        running_var_estimator=Cited({"fused": "unbiased", "non-fused": "biased"}, FUSED_NOTE),
        normalize_estimator=Cited("biased", f"{BN}: _moments -> tf.nn.moments; fused kernel normalizes with "
                                            "the batch variance divided by n"),
        single_value_batch=Cited("offset", f"{BN}: no batch-size check; variance 0 gives output beta; the fused "
                                           "kernel guards the n/(n-1) factor for n = 1"),
        cumulative_average=Cited(False, f"{BN}: momentum is a float; no cumulative-average mode"),
        batch_stats_inference=Cited(None, f"{BN}: batch statistics only with training=True, which also updates "
                                          "the moving statistics"),
        variance_algorithm=Cited("two-pass", "tensorflow/core/kernels/fused_batch_norm_op.cc: x_centered = x - mean, "
                                             "then the mean of its square; non-fused: tensorflow/python/ops/nn_impl.py "
                                             "moments, reduce_mean(squared_difference(y, mean))"),
        training_default=Cited("inference", f"{BN}: _get_training_value, training=None -> "
                                            "backend.learning_phase() which is 0 outside fit()"),
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
        notes={"running_var_estimator": FUSED_NOTE},
    )


class TfKerasLayerBase(BatchNormAdapter):
    """Common code for layers with the tf_keras BatchNormalization API (V1 and V2)."""

    families = ("tensorflow",)

    def _layer_class(self):
        raise NotImplementedError

    @classmethod
    def numeric_settings(cls) -> dict:
        """TF32 and similar reduced-precision float32 modes off (bnsuite.adapters.numerics), as recorded."""
        from bnsuite.adapters import numerics

        return numerics.tensorflow_full_fp32()

    @classmethod
    def supported_dtypes(cls):
        return ("float32", "float64", "float16", "bfloat16")

    @classmethod
    def device_unavailable_reason(cls, device):
        if device == "cpu":
            return None
        import tensorflow as tf

        return None if tf.config.list_physical_devices("GPU") else "no GPU visible to TensorFlow"

    def __init__(self, spec):
        super().__init__(spec)
        import tensorflow as tf

        self.tf = tf
        self._device = "/GPU:0" if spec.device == "gpu" else "/CPU:0"
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("tf_keras has no cumulative moving average (momentum=None); declared")
        if not spec.track_running_stats:
            raise Unsupported("tf_keras has no option to skip the moving statistics; declared")
        kwargs = {"dtype": spec.dtype}
        if not spec.use_defaults:
            kwargs.update(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum,
                          center=spec.affine, scale=spec.affine)
        elif not spec.channels_last:
            kwargs.update(axis=1)
        with tf.device(self._device):
            self.layer = self._layer_class()(**kwargs)
            shape = [None] * spec.rank
            shape[spec.channel_axis] = spec.num_features
            self.layer.build(tf.TensorShape(shape))

    def forward(self, x, training):
        with self.tf.device(self._device):
            xt = self.tf.convert_to_tensor(np.asarray(x), dtype=self.spec.dtype)
            y = self.layer(xt) if training is None else self.layer(xt, training=training)
        self.last_output_dtype = dtype_name(y.dtype)
        return np.asarray(y.numpy(), dtype=np.float64)

    def state_dtypes(self):
        lay = self.layer
        d = lambda w: None if w is None else dtype_name(w.dtype.base_dtype)
        return {"scale": d(lay.gamma), "offset": d(lay.beta), "mean": d(lay.moving_mean),
                "var": d(lay.moving_variance)}

    def backward(self, x, dy, training):
        """tf.GradientTape over one call; a training call moves the moving statistics, so they are restored."""
        tf, lay = self.tf, self.layer
        params = [w for w in (lay.gamma, lay.beta) if w is not None]
        saved = self.get_state()
        try:
            with tf.device(self._device):
                xt = tf.convert_to_tensor(np.asarray(x), dtype=self.spec.dtype)
                dyt = tf.convert_to_tensor(np.asarray(dy), dtype=self.spec.dtype)
                with tf.GradientTape() as tape:
                    tape.watch(xt)
                    loss = tf.reduce_sum(lay(xt, training=training) * dyt)
                grads = tape.gradient(loss, [xt] + params)
        finally:
            self.set_state(saved)
        f64 = lambda g: None if g is None else np.asarray(g.numpy(), np.float64)
        named = dict(zip([id(w) for w in params], grads[1:]))
        pick = lambda w: None if w is None else f64(named[id(w)])
        return Grads(f64(grads[0]), pick(lay.gamma), pick(lay.beta))

    def get_state(self) -> State:
        lay = self.layer
        v = lambda w: None if w is None else np.asarray(w.numpy(), np.float64).copy()
        return State(v(lay.gamma), v(lay.beta), v(lay.moving_mean), v(lay.moving_variance))

    def set_state(self, state: State) -> None:
        lay = self.layer
        for var, val in ((lay.gamma, state.scale), (lay.beta, state.offset), (lay.moving_mean, state.mean),
                         (lay.moving_variance, state.var)):
            if var is not None and val is not None:
                var.assign(np.asarray(val).astype(var.dtype.as_numpy_dtype))

    def hyperparameters(self):
        lay = self.layer
        axis = lay.axis[0] if isinstance(lay.axis, (list, tuple)) else lay.axis
        return {"eps": lay.epsilon, "momentum": lay.momentum,
                "channels_last": axis in (-1, self.spec.rank - 1)}

    def frozen_step(self, idiom, x, dy, lr):
        import tf_keras

        from bnsuite.adapters.keras_fit import fit_step

        if idiom == "torch_module_eval":
            raise Unsupported("torch_module_eval exists on the Keras torch backend only")
        tf = self.tf
        to_tensor = lambda a: tf.convert_to_tensor(np.asarray(a), dtype=self.spec.dtype)
        with tf.device(self._device):
            return fit_step(tf_keras, self, idiom, x, dy, lr, to_tensor, lambda t: t.numpy(), tf.reduce_sum)

    def code_path(self, x_shape) -> str:
        # The layer decides at build time; `fused` is its own record of the decision.
        return "fused" if self.layer.fused else "non-fused"


class TfKerasV2(TfKerasLayerBase):
    id = "tf_keras"
    requires = ("tf_keras", "tensorflow")

    @classmethod
    def declare(cls):
        return tf_keras_declaration(True, "tf_keras (TF2 layer)", BN)

    @classmethod
    def versions(cls):
        import tensorflow as tf
        import tf_keras

        return {"tf_keras": tf_keras.__version__, "tensorflow": tf.__version__}

    def _layer_class(self):
        import tf_keras

        return tf_keras.layers.BatchNormalization

    def snippet(self):
        s = self.spec
        return ("import tf_keras\nbn = tf_keras.layers.BatchNormalization(" +
                ("" if s.use_defaults else f"axis={s.channel_axis}, momentum={1 - (s.momentum or 0):g}, "
                                           f"epsilon={s.eps}, ") + f"dtype={s.dtype!r})")
