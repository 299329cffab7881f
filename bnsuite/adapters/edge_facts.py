"""Declared behaviour of each built-in adapter on inputs that break BatchNorm (suites/test_edge_inputs.py): an empty
batch, eps <= 0, masks and layer options. One table per adapter, built from small tables per framework family; an
adapter names its table as the "edge_facts" capability (bnsuite/adapters/capabilities.py), so a wrapper of a built-in
adapter inherits it with the rest of the table, and a user's adapter names a mapping of its own. An adapter that names
none skips these cases, saying so; a key a table lacks skips its case, saying so.

Values are the strings suites/test_edge_inputs.py observes:
  empty_batch_training / empty_batch_inference: "error:<ExceptionClass>" or
      "empty output, running stats unchanged|nan|changed"
  eps_zero / eps_negative (training step on a batch whose channel 0 is constant): "error:<ExceptionClass>" or
      "accepted, constant channel -> nan|offset|inf|other"
NaN and inf in one channel need no declaration: the oracle defines where they may go (their own channel only).
"""

from __future__ import annotations

from bnsuite.adapters.base import Cited, by_version

_TORCH_F = "torch/nn/functional.py: batch_norm"
_TORCH_EMPTY = ("aten/src/ATen/native/Normalization.cpp: _batch_norm_impl_index returns early when input.sym_numel() "
                "== 0, before the running-stat update; pytorch/pytorch#12013 (closed): 'leave them not updated'")
TORCH = {
    "empty_batch_training": Cited("empty output, running stats unchanged", _TORCH_EMPTY),
    "empty_batch_inference": Cited("empty output, running stats unchanged", _TORCH_EMPTY),
    "eps_zero": Cited("error:ValueError", f"{_TORCH_F}: 'if training and eps <= 0.0: raise ValueError(\"batch_norm "
                                          "eps must be positive during training\")'"),
    "eps_negative": Cited("error:ValueError", f"{_TORCH_F}: 'if training and eps <= 0.0: raise ValueError'"),
}

_NAN_MOMENTS = ("the batch mean and variance of an empty batch are 0/0 = NaN and the moving-average update has no "
                "guard for it")
_NO_EPS_CHECK = ("no validation of epsilon; a constant channel then computes (x - mean) * rsqrt(0 + eps) = 0 * inf "
                 "(eps = 0) or 0 * rsqrt(negative) (eps < 0), NaN")


def _nan_on_empty_batch_eps_unchecked(empty_training: str, empty_inference: str, eps_zero: str,
                                      eps_negative: str) -> dict[str, Cited[str]]:
    """The facts Keras 3, tf_keras and Flax share, each argument that framework's source: a training step on an empty
    batch sets the running statistics to NaN, inference leaves them unchanged, and eps = 0 or eps < 0 is accepted (a
    constant channel then normalizes to NaN)."""
    return {
        "empty_batch_training": Cited("empty output, running stats nan", empty_training),
        "empty_batch_inference": Cited("empty output, running stats unchanged", empty_inference),
        "eps_zero": Cited("accepted, constant channel -> nan", eps_zero),
        "eps_negative": Cited("accepted, constant channel -> nan", eps_negative),
    }


_K3 = "keras/src/layers/normalization/batch_normalization.py"
KERAS3 = _nan_on_empty_batch_eps_unchecked(
    f"{_K3}: BatchNormalization.call, _moments -> ops.moments, then moving_mean.assign(moving_mean * momentum + mean "
    f"* (1 - momentum)); {_NAN_MOMENTS}",
    f"{_K3}: BatchNormalization.call, inference reads moving_mean/moving_variance and assigns nothing",
    f"{_K3}: __init__ self.epsilon = float(epsilon), {_NO_EPS_CHECK}",
    f"{_K3}: __init__, {_NO_EPS_CHECK}")
_TFK = "tf_keras/src/layers/normalization/batch_normalization.py"
TF_KERAS = _nan_on_empty_batch_eps_unchecked(
    f"{_TFK}: BatchNormalizationBase.call -> _fused_batch_norm (rank 4) or _moments (tf.nn.moments); "
    f"_assign_moving_average; {_NAN_MOMENTS}; the same cause is reported for Sonnet in google-deepmind/sonnet#125 "
    "(open)",
    f"{_TFK}: BatchNormalizationBase.call, inference uses the moving statistics",
    f"{_TFK}: __init__ self.epsilon = epsilon, {_NO_EPS_CHECK}",
    f"{_TFK}: __init__, {_NO_EPS_CHECK}")
_FLAX = "flax/linen/normalization.py (nnx/nn/normalization.py likewise)"
FLAX = _nan_on_empty_batch_eps_unchecked(
    f"{_FLAX}: _compute_stats, jnp.mean over an empty axis; BatchNorm.__call__ ra_mean.value = momentum * "
    f"ra_mean.value + (1 - momentum) * mean; {_NAN_MOMENTS}",
    f"{_FLAX}: use_running_average=True reads ra_mean/ra_var and writes nothing",
    f"{_FLAX}: _normalize, mul = lax.rsqrt(var + epsilon); {_NO_EPS_CHECK}",
    f"{_FLAX}: _normalize; {_NO_EPS_CHECK}")

# Masks: call(mask=...) with a padding mask over the positions (the input's shape without the channel axis).
_MASKED = "masked statistics, biased variance"
_K3_MASK = (f"{_K3}: _moments(inputs, mask) expands the mask at axis -1 (ops.expand_dims(mask, axis=-1)), "
            "broadcasts it to the input and divides the masked sums by the mask count: biased masked moments")
_K3_CF = (f"{_K3}: call requires a mask with one dimension less than the input, and _moments broadcasts it along the "
          "LAST axis, which in a channels-first layout is a spatial axis, so a per-position mask cannot be expressed")
_K3_ONE = (f"{_K3}: _moments returns ops.squeeze(mean), ops.squeeze(variance), which drops the channel axis of size 1 "
           "as well; ops.batch_normalization then reads mean.shape[0] of the scalar "
           "(keras/src/backend/tensorflow/nn.py: batch_normalization does so when axis != -1, and the adapter passes "
           "the channel axis as a positive index; the jax and torch backends fail for axis=-1 too)")


def _keras3_masks(cf_error: str, one_channel: str) -> dict[str, Cited[str]]:
    return {
        "mask_NLC": Cited(_MASKED, _K3_MASK),
        "mask_NHWC": Cited(_MASKED, _K3_MASK),
        "mask_NLC_one_channel": Cited(one_channel, _K3_ONE if one_channel.startswith("error") else _K3_MASK),
        "mask_NCL": Cited(cf_error, _K3_CF),
        "mask_NCHW": Cited(cf_error, _K3_CF),
    }


_TFK_MASK = (f"{_TFK}: _moments -> _no_sync_calculate_mean_and_var uses tf.nn.weighted_moments with the mask "
             "expanded at axis -1 as frequency weights (biased) on the non-fused path")
_TFK_FUSED = (f"{_TFK}: _fused_batch_norm warns 'Masking is not supported with fused=True ... mask will be ignored' "
              "and normalizes with the statistics of every position (fused is the default for rank 4); the fused "
              "kernel's running variance is unbiased (see running_var_estimator)")
_TFK_CF = (f"{_TFK}: the mask is expanded at axis -1, a spatial axis in a channels-first layout, so a per-position "
           "mask does not broadcast against the input")
TF_KERAS_MASKS = {
    "mask_NLC": Cited(_MASKED, _TFK_MASK),
    "mask_NLC_one_channel": Cited(_MASKED, _TFK_MASK),
    "mask_NHWC": Cited("unmasked statistics, unbiased variance", _TFK_FUSED),
    "mask_NCL": Cited("error:InvalidArgumentError", _TFK_CF),
    "mask_NCHW": Cited("unmasked statistics, unbiased variance", _TFK_FUSED),
}
_FLAX_MASK = (f"{_FLAX}: BatchNorm.__call__(x, mask=...) -> _compute_stats(x, axes, mask=mask): means weighted by a "
              "mask broadcastable to x (the channel axis of size 1), biased")
FLAX_MASKS = {key: Cited(_MASKED, _FLAX_MASK)
              for key in ("mask_NLC", "mask_NLC_one_channel", "mask_NHWC", "mask_NCL", "mask_NCHW")}

# Options beyond one channel axis: ghost batches, several feature axes, the mode given at construction and call.
TF_KERAS_OPTIONS = {
    "virtual_batch_grouping": Cited(
        "strided ghost batches",
        f"{_TFK}: call reshapes the batch to [virtual_batch_size, -1, ...] and reduces over axis 0 (reduction_axes "
        "drops axis 1), so ghost batch b holds samples b, b + N/vbs, b + 2 N/vbs, ... (not contiguous blocks)"),
    "virtual_batch_running_stats": Cited(
        "mean of ghost-batch moments, biased",
        f"{_TFK}: new_mean = tf.reduce_mean(mean, axis=1), new_variance = tf.reduce_mean(variance, axis=1) over the "
        "ghost batches' biased moments (non-fused: _fused_can_be_used refuses virtual_batch_size); the comment "
        "says the sequential per-ghost-batch update is skipped on purpose"),
    "several_axes": Cited("supported", f"{_TFK}: axis may be a list; build() makes param_shape over every axis "
                                       "listed and call() reduces over the others (non-fused)"),
}
KERAS3_OPTIONS = {
    "several_axes": Cited("error:TypeError", f"{_K3}: __init__ self.axis = int(axis) (a list raises TypeError); "
                                             "keras-team/keras#12126 (closed) asked for tf.keras' list axis"),
}
_LINEN_MERGE = ("flax/linen/normalization.py: BatchNorm.__call__ use_running_average = module.merge_param("
                "'use_running_average', self.use_running_average, use_running_average); flax/linen/module.py: "
                "merge_param raises ValueError when both or neither are given")
_NNX_SHAPE = ("flax/nnx/nn/normalization.py: BatchNorm.__init__(num_features: int, ...) creates scale and the "
              "BatchStats with shape (num_features,), which does not match the statistics of several axes")
_NNX_FIRST = ("flax/nnx/nn/normalization.py: BatchNorm.__call__ use_running_average = first_from("
              "use_running_average, self.use_running_average, ...): the call's value takes precedence (docstring)")
FLAX_LINEN_OPTIONS = {
    "several_axes": Cited("supported", "flax/linen/normalization.py: BatchNorm.axis: int | Any (a tuple of feature "
                                       "axes), _compute_stats reduces over the others; scale/mean have their shape"),
    "use_running_average_true_then_false": Cited("error:ValueError", _LINEN_MERGE),
    "use_running_average_false_then_true": Cited("error:ValueError", _LINEN_MERGE),
    "use_running_average_true_then_omitted": Cited("running statistics", _LINEN_MERGE),
    "use_running_average_false_then_omitted": Cited("batch statistics", _LINEN_MERGE),
}
FLAX_NNX_OPTIONS = {
    # Both releases refuse; which line raises depends on how the running statistics are written (flax_common.py).
    "several_axes": by_version(
        "flax",
        ("<0.12.1", Cited("error:TypeError", f"{_NNX_SHAPE}; the update replaces the BatchStat's array (Variable "
                                             "`.value` setter) with the (width, channel) statistics, then _normalize "
                                             "raises in scale.reshape(feature_shape): 'cannot reshape array of shape "
                                             "(3,)'")),
        (">=0.12.1", Cited("error:ValueError", f"{_NNX_SHAPE}; the update writes into the existing array "
                                               "(Variable.set_value: raw_value.at[...].set, commit 33fbbe6b 'Variable "
                                               "refactor', first released in 0.12.1), which cannot broadcast the "
                                               "(width, channel) statistics into (num_features,)"))),
    "use_running_average_true_then_false": Cited("batch statistics", _NNX_FIRST),
    "use_running_average_false_then_true": Cited("running statistics", _NNX_FIRST),
    "use_running_average_true_then_omitted": Cited("running statistics", _NNX_FIRST),
    "use_running_average_false_then_omitted": Cited("batch statistics", _NNX_FIRST),
}

_PADDLE_LAYER = "paddle/nn/layer/norm.py"
_PADDLE_KERNEL = "paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel"
PADDLE = {
    "empty_batch_training": Cited("empty output, running stats unchanged",
                                  "paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel, observed paddle "
                                  "3.3.1: an input with N = 0 returns an empty output and leaves _mean/_variance"),
    "empty_batch_inference": Cited("empty output, running stats unchanged",
                                   f"{_PADDLE_KERNEL}: global_stats path reads mean/variance only"),
    "eps_zero": Cited("accepted, constant channel -> nan",
                      f"{_PADDLE_LAYER}: _BatchNormBase.__init__ stores epsilon unchecked; {_PADDLE_KERNEL}: "
                      "saved_inv_std = (var + epsilon).inverse().sqrt() is inf for a constant channel, 0 * inf = NaN"),
    "eps_negative": Cited("accepted, constant channel -> nan",
                          f"{_PADDLE_LAYER}: epsilon unchecked; {_PADDLE_KERNEL}: sqrt of (0 + epsilon) < 0 is NaN"),
}


_TG = "tinygrad/nn/__init__.py: BatchNorm"
TINYGRAD = _nan_on_empty_batch_eps_unchecked(
    f"{_TG}.calc_stats, x.mean over an empty batch is 0/0; __call__ running_mean.assign((1-momentum) * running_mean + "
    f"momentum * batch_mean) with no guard (the Bessel factor 0/(0-C) is -0.0, no error); {_NAN_MOMENTS}",
    f"{_TG}.calc_stats returns the running statistics outside TRAINING and __call__ assigns nothing",
    f"{_TG}.__init__ stores eps unchecked; __call__ batch_var.add(self.eps).rsqrt() is inf for a constant channel, "
    "0 * inf = NaN",
    f"{_TG}.__init__ stores eps unchecked; rsqrt of a negative variance + eps is NaN")

_MS_PRIM = "mindspore/ops/operations/manually_defined/ops_def.py: BatchNorm"
_MS_EPS = (f"{_MS_PRIM} docstring 'epsilon (float, optional) ... value must be (0, 1]'; the primitive raises "
           "ValueError 'For primitive[BatchNorm], the eps must be in (0,1]' (mindspore/nn/layer/normalization.py: "
           "_BatchNorm.__init__ passes eps unchecked; observed mindspore 2.10.0)")
MINDSPORE = {
    "empty_batch_training": Cited("empty output, running stats changed",
                                  f"{_MS_PRIM} (CPU kernel, compiled): observed mindspore 2.10.0, an N = 0 batch takes "
                                  "mean 0 and variance 0 as its statistics, so moving_mean and moving_variance decay "
                                  "toward 0 by the momentum (variance 1 -> 0.9 with the default) with no error"),
    "empty_batch_inference": Cited("empty output, running stats unchanged",
                                   "mindspore/nn/layer/normalization.py: _BatchNorm.construct, bn_infer reads "
                                   "moving_mean/moving_variance only"),
    "eps_zero": Cited("error:ValueError", _MS_EPS),
    "eps_negative": Cited("error:ValueError", _MS_EPS),
}


# One table per built-in adapter, named by its `capabilities` as "edge_facts" ("bnsuite.adapters.edge_facts:TORCH").
KERAS_TENSORFLOW = {**KERAS3, **_keras3_masks("error:InvalidArgumentError", "error:IndexError"), **KERAS3_OPTIONS}
KERAS_JAX = {**KERAS3, **_keras3_masks("error:ValueError", "error:IndexError"), **KERAS3_OPTIONS}
KERAS_TORCH = {**KERAS3, **_keras3_masks("error:RuntimeError", "error:IndexError"), **KERAS3_OPTIONS}
TF_KERAS_V2 = {**TF_KERAS, **TF_KERAS_MASKS, **TF_KERAS_OPTIONS}
TF1_KERAS = {**TF_KERAS, **TF_KERAS_MASKS, **TF_KERAS_OPTIONS}
TF1_GRAPH = {**TF_KERAS, **TF_KERAS_OPTIONS}
FLAX_LINEN = {**FLAX, **FLAX_MASKS, **FLAX_LINEN_OPTIONS}
FLAX_NNX = {**FLAX, **FLAX_MASKS, **FLAX_NNX_OPTIONS}


# Every key a fact may have (meta_tests/test_edge_facts.py checks the tables and the suite against it).
KEYS = ("empty_batch_training", "empty_batch_inference", "eps_zero", "eps_negative",
        "mask_NLC", "mask_NLC_one_channel", "mask_NHWC", "mask_NCL", "mask_NCHW",
        "virtual_batch_grouping", "virtual_batch_running_stats", "several_axes",
        "use_running_average_true_then_false", "use_running_average_false_then_true",
        "use_running_average_true_then_omitted", "use_running_average_false_then_omitted")

