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
    # -- norms: LayerNorm, GroupNorm, InstanceNorm, RMSNorm ------------------------------------------------------------
    Finding(
        name="keras_torch_groupnorm_one_pass_variance",
        title="Keras 3 GroupNormalization (and InstanceNorm via groups=-1) on the torch backend loses every digit, down "
              "to NaN, when a group's mean is large against its spread; the tensorflow and jax backends stay accurate",
        area="norms", adapters=("keras-torch",), versions="keras 3.15.1, torch 2.13.0", severity="high",
        source="keras/src/backend/torch/nn.py: moments computes Var = E[|x|^2] - |E[x]|^2 without clamping; "
               "keras/src/layers/normalization/group_normalization.py: _apply_normalization uses ops.moments",
        upstream="keras-team/keras#18795 (merged: fixed the tensorflow and jax moments only); "
                 "keras-team/keras-core#866 (merged: the fast one-pass moments, by design)",
        properties=("norm_variance_algorithm",)),
    Finding(
        name="flax_norms_fast_variance_large_mean",
        title="Flax LayerNorm, GroupNorm and InstanceNorm default to use_fast_variance=True (E[x^2] - E[x]^2): in "
              "float32 a sample whose mean is ~1000x its spread gets a variance with no correct digit and a visibly "
              "wrong output; use_fast_variance=False is accurate",
        area="norms", adapters=("flax-linen", "flax-nnx"), versions="flax 0.12.8, jax 0.10.2", severity="medium",
        source="flax/linen/normalization.py: _compute_stats (use_fast_variance=True: 'faster, but less numerically "
               "stable'), LayerNorm/GroupNorm/InstanceNorm use_fast_variance: bool = True; "
               "flax/nnx/nn/normalization.py: the same defaults",
        upstream=None,
        properties=("norm_variance_algorithm",)),
    Finding(
        name="flax_layernorm_not_bitwise_batch_independent",
        title="Per-sample normalizations are batch-independent only up to rounding outside torch: a sample's Flax "
              "LayerNorm output under jax.jit changes by 1 ulp between a batch of 8 and a batch of 1 (Keras on "
              "jax and tensorflow, tf_keras GroupNormalization likewise, up to 7e-7)",
        area="norms", adapters=("flax-linen", "flax-nnx", "keras-jax", "keras-tensorflow", "tf_keras"),
        versions="flax 0.12.8, jax 0.10.2, keras 3.15.1, tensorflow 2.21", severity="low",
        source="XLA compiles one fusion per input shape (jax.jit(lambda a: jnp.mean(a * a, -1)) differs by 1 ulp "
               "between x[:1] and x); TF's Eigen reductions split the reduced axes by tensor shape",
        upstream=None,
        properties=("norm_batch_size_independent",)),
    # -- blocks around BatchNorm (Dropout order, ReLU order, one-output sigmoid/softmax) ------------------------------
    Finding(
        name="keras_tf_one_unit_softmax_trains_as_sigmoid",
        title="Keras on TensorFlow trains a softmax over one unit (whose output is the constant 1) as if it were a "
              "sigmoid: BinaryCrossentropy reads the softmax's input as logits, so the loss falls while every "
              "prediction stays 1.0; torch, Flax and Keras on jax/torch give the exact zero gradient",
        area="blocks",
        adapters=("keras-tensorflow", "tf_keras", "tf1-keras"),
        versions="keras 3.15.1, tf_keras 2.21",
        severity="high",
        source="keras/src/activations/activations.py: softmax sets output._keras_logits = x; "
               "keras/src/backend/tensorflow/nn.py: _get_logits (called by binary_crossentropy) uses any "
               "output._keras_logits as logits; tf_keras/src/backend.py: softmax and _get_logits likewise",
        upstream="keras-team/keras#15271 (closed; the same _keras_logits shortcut seen through model.predict, not "
                 "this case)",
        properties=("softmax_one_unit_bce_gradient",),
    ),
    # -- replicas: BatchNorm with the batch split over replicas (suites/test_replicas.py) ----------------------------
    Finding(
        name="torch_sync_batchnorm_refuses_cpu",
        title="torch's SyncBatchNorm cannot synchronize CPU replicas: DistributedDataParallel refuses it at "
              "construction and the bare layer raises at its first training forward, so CPU data-parallel training "
              "has no synchronized BatchNorm",
        area="replicas", adapters=("torch",), versions="torch 2.13.0", severity="medium",
        source="torch/nn/parallel/distributed.py: DistributedDataParallel._passing_sync_batchnorm_handle "
               "('SyncBatchNorm layers only work with GPU modules'); torch/nn/modules/batchnorm.py: "
               "SyncBatchNorm.forward ('SyncBatchNorm expected input tensor to be on GPU or XPU or ...')",
        upstream="pytorch/pytorch#78078 (closed pull request '[WIP] Enable SyncBatchNorm in CPU backend')",
        properties=("replica_outcome", "replica_shard_outcome")),
    Finding(
        name="torch_ddp_replica_running_stats_differ",
        title="Under DistributedDataParallel no replica holds the global BatchNorm running statistics: the default "
              "broadcast_buffers=True copies rank 0's buffers BEFORE each forward, so every replica then adds only "
              "its own shard (replicas differ after every step, and rank 0's checkpoint reflects rank 0's shards "
              "only); broadcast_buffers=False and forward_sync_buffers=False leave each replica with its own",
        area="replicas", adapters=("torch",), versions="torch 2.13.0", severity="medium",
        source="torch/nn/parallel/distributed.py: DistributedDataParallel._pre_forward -> _check_sync_bufs_pre_fwd "
               "-> _sync_buffers (authoritative_rank = 0); __init__: broadcast_buffers also sets init_sync_buffers",
        upstream="pytorch/pytorch#30718 (open feature request: a method to broadcast buffers, e.g. BatchNorm "
                 "statistics, on demand)",
        properties=("replica_running_stats_rule", "replica_running_stats_equal")),
    Finding(
        name="flax_axis_name_uneven_shards_unweighted",
        title="Flax BatchNorm(axis_name=...) with uneven shards (padding + mask) normalizes with the plain mean of "
              "the devices' masked means, not the global mean; a device whose shard is fully masked makes every "
              "device's output NaN",
        area="replicas", adapters=("flax-linen", "flax-nnx"), versions="flax 0.12.8, jax 0.10.2",
        severity="high",
        source="flax/linen/normalization.py and flax/nnx/nn/normalization.py: _compute_stats -> "
               "maybe_distributed_mean: x.mean(axes, where=mask) per device, then lax.pmean (equal weights)",
        upstream=None,
        properties=("replica_shard_forward",)),
    Finding(
        name="jax_shard_map_axis_index_groups",
        title="Flax BatchNorm(axis_index_groups=...) computes group statistics under jax.pmap but raises a bare "
              "NotImplementedError under jax.shard_map, pmap's recommended replacement",
        area="replicas", adapters=("flax-linen", "flax-nnx"), versions="jax 0.10.2, flax 0.12.8", severity="medium",
        source="jax/_src/lax/parallel.py: psum -> _psum -> bind_psum_invariant raises NotImplementedError when "
               "axis_index_groups is not None",
        upstream="jax-ml/jax#19709 (closed: shard_map collectives don't support axis_index_groups)",
        properties=("replica_outcome",)),
    Finding(
        name="tf_keras_synchronized_without_strategy",
        title="tf_keras BatchNormalization(synchronized=True) changes the layer WITHOUT any distribution strategy, "
              "though its docstring says it has no impact: it disables the fused kernel (the running variance of "
              "rank-4 inputs becomes biased) and computes the variance one-pass, E[x^2] - E[x]^2 (output off by ~80 "
              "on a mean 1e4 times the spread); Keras 3 on TensorFlow takes the same one-pass path",
        area="replicas", adapters=("tf_keras", "keras-tensorflow"), versions="tf_keras 2.21, keras 3.15.1",
        severity="high",
        source="tf_keras/src/layers/normalization/batch_normalization.py: BatchNormalizationBase.__init__ (fused = "
               "False when synchronized), _sync_calculate_mean_and_var (tf.distribute.get_replica_context() is the "
               "default replica context outside a strategy, never None); keras/src/backend/tensorflow/nn.py: "
               "_compute_moments_sync",
        upstream=None,
        properties=("synchronized_no_strategy_estimator", "synchronized_no_strategy_variance")),
    Finding(
        name="tf1_keras_synchronized_silently_dropped",
        title="The TF1 layer tf.compat.v1.keras.layers.BatchNormalization accepts synchronized=True and silently "
              "drops it: under MirroredStrategy every replica normalizes with, and keeps, its own shard's statistics",
        area="replicas", adapters=("tf1-keras",), versions="tf_keras 2.21, TensorFlow 2.21", severity="high",
        source="tf_keras/src/layers/normalization/batch_normalization_v1.py: BatchNormalization.__init__ "
               "kwargs.pop('synchronized', None) ('synchronized not implemented in V1')",
        upstream=None,
        properties=("replica_normalizes_with", "replica_running_stats_rule")),
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
    # -- mixed precision (suites/test_mixed_precision.py) --------------------------------------------------------------
    Finding(
        name="flax_param_dtype_output_dtype",
        title="flax.nnx.BatchNorm(param_dtype=bfloat16) returns float32 where flax.linen.BatchNorm with the same "
              "arguments returns bfloat16: NNX promotes the input with the float32 running statistics",
        area="precision",
        adapters=("flax-nnx", "flax-linen"),
        versions="flax 0.12.8, jax 0.10.2",
        severity="low",
        source="flax/nnx/nn/normalization.py: BatchNorm.__call__, x, mean, var, scale, bias = "
               "self.promote_dtype((x, self.mean[...], self.var[...], scale, bias), dtype=self.dtype); "
               "flax/linen/normalization.py: _normalize, dtype = dtypes.canonicalize_dtype(*args, dtype=dtype) with "
               "args = [x, scale, bias]",
        upstream=None,
        properties=("mixed_output_dtype",),
    ),
]
