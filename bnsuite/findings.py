"""Findings: surprises in a framework (a divergence from its documentation, from the other frameworks, or from itself
across code paths or releases), each declared ONCE here as data.

The README's findings section, the report's findings list and the failure messages of the checks that demonstrate a
finding all come from these declarations. Each finding has a standalone reproduction ``findings/<name>.py`` at the
root of the checkout: it imports only its framework and NumPy, builds the layer AND its input (seeded), prints the
observed and the expected value (with the words "observed" and "expected"), and exits 1 while the behaviour is
present, 0 once it is gone, 2 on any other error.

Standard library only: the report and the README generator import this module without any framework.
"""

from __future__ import annotations

import dataclasses

SEVERITIES = ("high", "medium", "low")  # high: silently wrong numbers or training; medium: a trap with a loud symptom
# or a documented-but-surprising default; low: a cosmetic or well-documented divergence.


@dataclasses.dataclass(frozen=True)
class Finding:
    name: str  # snake_case; the reproduction is findings/<name>.py
    title: str  # one sentence a user understands without the suite
    area: str  # the semantic area: "porting", "freeze", "batch-size", "precision", "replicas", "inputs", "norms", ...
    adapters: tuple[str, ...]  # adapter ids affected
    versions: str  # the framework versions it was observed on, e.g. "keras 3.15.1"
    severity: str  # one of SEVERITIES
    source: str  # the framework source (file and function or line) or documentation that explains it
    upstream: str | None  # "owner/repo#N" (with its state, e.g. "closed, guide edit only") or None: not reported
    properties: tuple[str, ...]  # property names whose checks demonstrate it (written whole, greppable)


FINDINGS: list[Finding] = [
    # -- inputs that break BatchNorm (suites/test_edge_inputs.py) --
    Finding(
        name="empty_batch_nan_running_stats",
        title="One training step on an empty batch (N = 0) silently sets every running mean and variance to NaN in "
              "Keras 3, tf_keras, the TF1 layers and Flax; PyTorch leaves them unchanged",
        area="inputs",
        adapters=("keras-tensorflow", "keras-jax", "keras-torch", "tf_keras", "tf1-keras", "tf1-graph", "flax-linen",
                  "flax-nnx"),
        versions="keras 3.15.1, tf_keras / TensorFlow 2.21, flax 0.12.8 (torch 2.13.0 unaffected)",
        severity="high",
        source="keras/src/layers/normalization/batch_normalization.py: BatchNormalization.call assigns "
               "moving_mean * momentum + mean * (1 - momentum) with the 0/0 = NaN moments of an empty batch, no guard; "
               "likewise tf_keras BatchNormalizationBase.call and flax/linen/normalization.py _compute_stats; torch: "
               "aten/src/ATen/native/Normalization.cpp _batch_norm_impl_index returns before the update when "
               "numel() == 0",
        upstream=None,  # searched: none for keras, tf_keras or flax; Sonnet's google-deepmind/sonnet#125 (open) and
        # pytorch/pytorch#12013 (closed, fixed) are the same question elsewhere
        properties=("empty_batch_training",),
    ),
    Finding(
        name="nonpositive_eps_accepted",
        title="epsilon = 0 and epsilon < 0 are accepted without a word by Keras 3, tf_keras, the TF1 layers and Flax "
              "(a constant channel then normalizes to NaN); PyTorch raises ValueError in training",
        area="inputs",
        adapters=("keras-tensorflow", "keras-jax", "keras-torch", "tf_keras", "tf1-keras", "tf1-graph", "flax-linen",
                  "flax-nnx"),
        versions="keras 3.15.1, tf_keras / TensorFlow 2.21, flax 0.12.8 (torch 2.13.0 raises)",
        severity="medium",
        source="keras/src/layers/normalization/batch_normalization.py: __init__ self.epsilon = float(epsilon), no "
               "check; tf_keras BatchNormalizationBase.__init__ likewise; flax _normalize uses lax.rsqrt(var + "
               "epsilon); torch/nn/functional.py batch_norm: 'if training and eps <= 0.0: raise ValueError'",
        upstream="tensorflow/tensorflow#122612 (open PR: validate variance_epsilon > 0 in tf.nn.batch_normalization; "
                 "none for keras or flax; torch's check came with pytorch/pytorch#166756, closed)",
        properties=("eps_zero", "eps_negative"),
    ),
    Finding(
        name="tf_keras_fused_mask_ignored",
        title="tf_keras BatchNormalization ignores call(mask=...) on rank-4 inputs (the default fused kernel): one "
              "Python warning, then batch statistics over every position, padding included",
        area="inputs",
        adapters=("tf_keras", "tf1-keras"),
        versions="tf_keras / TensorFlow 2.21",
        severity="high",
        source="tf_keras/src/layers/normalization/batch_normalization.py: _fused_batch_norm warns 'Masking is not "
               "supported with fused=True ... mask will be ignored'; fused defaults to True for rank 4",
        upstream="tensorflow/tensorflow#30161 (closed; a 2021 comment notes fused=False is needed for 2-D inputs)",
        properties=("masked_batch_statistics",),
    ),
    Finding(
        name="keras3_masked_one_channel_error",
        title="Keras 3 BatchNormalization with a mask and a single channel raises IndexError in training on the jax "
              "and torch backends (and on tensorflow with a positive axis)",
        area="inputs",
        adapters=("keras-jax", "keras-torch", "keras-tensorflow"),
        versions="keras 3.15.1",
        severity="medium",
        source="keras/src/layers/normalization/batch_normalization.py: _moments returns ops.squeeze(mean), which "
               "drops the channel axis of size 1; the backends' batch_normalization then read mean.shape[0]",
        upstream="keras-team/keras#11123 (open PR from 2018 on the same squeeze in Keras 2; none for Keras 3)",
        properties=("masked_batch_statistics",),
    ),
    Finding(
        name="tf_keras_ghost_batches_strided",
        title="tf_keras virtual_batch_size forms STRIDED ghost batches (samples b, b + N/k, ...), not contiguous "
              "blocks of k samples, and keeps the average of the ghost batches' biased moments",
        area="inputs",
        adapters=("tf_keras", "tf1-keras", "tf1-graph"),
        versions="tf_keras / TensorFlow 2.21",
        severity="low",
        source="tf_keras/src/layers/normalization/batch_normalization.py: call reshapes to [virtual_batch_size, -1, "
               "...] and reduction_axes drops axis 1; new_mean = tf.reduce_mean(mean, axis=1)",
        upstream=None,  # searched; keras-team/keras#15790 (closed) is about inference batch sizes only
        properties=("virtual_batch_grouping", "virtual_batch_running_stats"),
    ),
    Finding(
        name="flax_use_running_average_linen_vs_nnx",
        title="use_running_average given at construction and at call: flax.linen raises ValueError, flax.nnx lets "
              "the call's value win silently",
        area="inputs",
        adapters=("flax-linen", "flax-nnx"),
        versions="flax 0.12.8",
        severity="low",
        source="flax/linen/module.py: merge_param raises when both are given; flax/nnx/nn/normalization.py: "
               "BatchNorm.__call__ first_from(use_running_average, self.use_running_average) (call takes precedence)",
        upstream=None,
        properties=("use_running_average_constructed_and_called",),
    ),
]
