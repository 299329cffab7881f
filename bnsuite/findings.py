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

import argparse
import dataclasses
import os
import sys

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
    # The adapter whose process environment (KERAS_BACKEND, TF_USE_LEGACY_KERAS) the reproduction runs in; "" means
    # the first of `adapters`.
    reproduce_with: str = ""
    # Test-id fragments that narrow which checks of `properties` demonstrate it (e.g. a freeze idiom); empty: every
    # check of those properties on those adapters.
    where: tuple[str, ...] = ()

    @property
    def reproduction(self) -> str:
        """The reproduction's path, relative to the root of the checkout."""
        return f"findings/{self.name}.py"

    @property
    def upstream_report(self) -> str:
        """Where the text of an upstream report lives for a finding not reported upstream yet."""
        return f"findings/{self.name}.upstream.md"


FINDINGS: list[Finding] = [
    # existing
    Finding(
        name="tf_fused_running_variance_unbiased",
        title="TensorFlow's fused BatchNorm kernel stores the UNBIASED batch variance in the running variance while "
              "the non-fused path (rank 2/3 inputs, Keras 3) stores the biased one, so the same layer class keeps "
              "different running variances depending on the input rank.",
        area="running-stats",
        adapters=("tf_keras", "tf1-keras", "tf1-graph"),
        versions="tf_keras / tensorflow 2.21.0",
        severity="medium",
        source="tf_keras/src/layers/normalization/batch_normalization.py: _fused_batch_norm uses "
               "tf.compat.v1.nn.fused_batch_norm, which applies Bessel's correction to the variance it returns; "
               "_calculate_mean_and_var (non-fused) uses tf.nn.moments (biased)",
        upstream="tensorflow/tensorflow#55545 (closed as stalled, not fixed)",
        properties=("running_var_estimator", "train_eval_gap"),
    ),
    Finding(
        name="keras3_functional_fit_overrides_training_false",
        title="Keras 3 overrides `training=False` baked into a functional model during fit(): `bn(x, training=False)` "
              "and the transfer-learning idiom `base_model(inputs, training=False)` train anyway and move the "
              "running statistics.",
        area="freeze",
        adapters=("keras-tensorflow", "keras-jax", "keras-torch"),
        versions="keras 3.15.1 (all backends)",
        severity="high",
        source="keras/src/models/functional.py: operation_fn writes the outer call's context arguments (fit's "
               "training=True) over each layer's recorded kwargs; a subclassed model and tf_keras keep training=False",
        upstream="keras-team/keras#20285 (closed as type:support with a guide edit only; the behaviour is unchanged)",
        properties=("freeze_normalizes_with", "freeze_running_stats_update", "finetune_bn_running_stats_update"),
        where=("functional_training_false_fit",),
    ),
    Finding(
        name="tf1_trainable_false_uses_batch_statistics",
        title="`trainable=False` means opposite things in TensorFlow's TF1 and TF2 BatchNorm layers: the TF2 layer "
              "then runs in inference mode, the TF1 layer keeps normalizing with batch statistics.",
        area="freeze",
        adapters=("tf1-keras", "tf1-graph"),
        versions="tensorflow 2.21.0 with tf_keras 2.21.0 (TF_USE_LEGACY_KERAS=1)",
        severity="medium",
        source="tf_keras/src/layers/normalization/batch_normalization.py: BatchNormalizationBase._get_training_value "
               "forces training=False for a non-trainable layer only `if self._USE_V2_BEHAVIOR` (False in the V1 "
               "class); documented in the TF2 layer's docstring",
        upstream=None,
        properties=("tf1_vs_tf2_normalizes_with", "freeze_normalizes_with"),
        where=("trainable_false",),
    ),
    Finding(
        name="tf1_graph_frozen_layer_adds_no_update_ops",
        title="In a TF1 graph, a BatchNorm layer frozen with `trainable=False` adds no ops to UPDATE_OPS yet still "
              "normalizes with batch statistics in training, so its running statistics silently never move.",
        area="freeze",
        adapters=("tf1-graph",),
        versions="tensorflow 2.21.0 with tf_keras 2.21.0 (TF_USE_LEGACY_KERAS=1)",
        severity="medium",
        source="tf_keras/src/engine/base_layer_v1.py: Layer.updates returns [] for `not self.trainable and not "
               "self.stateful`; tf_keras/src/legacy_tf_layers/base.py adds only those updates to UPDATE_OPS",
        upstream=None,
        properties=("tf1_vs_tf2_running_stats_update", "freeze_running_stats_update"),
        where=("trainable_false",),
    ),
    Finding(
        name="torch_freeze_idioms_update_running_stats",
        title="In PyTorch, `requires_grad_(False)` and `torch.no_grad()` do not freeze BatchNorm: in train mode its "
              "running statistics still move; only `module.eval()` stops them.",
        area="freeze",
        adapters=("torch",),
        versions="torch 2.13.0",
        severity="high",
        source="torch/nn/modules/batchnorm.py: _BatchNorm.forward decides on self.training (and "
               "track_running_stats) only; requires_grad and grad mode affect autograd, not the buffer update",
        upstream="pytorch/pytorch#86590 (open feature request: freeze running stats with requires_grad)",
        properties=("freeze_running_stats_update", "finetune_bn_running_stats_update"),
        where=("-requires_grad_false", "-no_grad"),
    ),
    Finding(
        name="torch_no_running_stats_batch1_eval_raises",
        title="PyTorch's BatchNorm with `track_running_stats=False` raises ValueError at batch size 1 even in "
              "eval() mode, where the other frameworks' batch-statistics inference returns the offset.",
        area="batch-size",
        adapters=("torch",),
        versions="torch 2.13.0",
        severity="low",
        source="torch/nn/functional.py: batch_norm calls _verify_batch_size whenever it uses batch statistics, "
               "and without running statistics eval() uses batch statistics",
        upstream="pytorch/pytorch#156051 (open)",
        properties=("batch_stats_inference_single_sample",),
    ),
    Finding(
        name="keras_torch_one_pass_negative_running_variance",
        title="Keras 3 on the torch backend computes the batch variance in one unclamped pass, E[x^2] - E[x]^2: "
              "inputs with a large mean over a small spread give a negative running variance and NaN outputs.",
        area="hard-inputs",
        adapters=("keras-torch",),
        versions="keras 3.15.1 (torch backend), torch 2.13.0",
        severity="high",
        source="keras/src/backend/torch/nn.py: moments() returns mean(square(x)) - square(mean) with no clamp; "
               "the tensorflow and jax backends center first (keras-team/keras#18795 fixed those two only)",
        upstream=None,
        properties=("hard_input_negative_variance", "hard_input_training_output"),
    ),
    Finding(
        name="flax_fast_variance_loses_precision",
        title="Flax's BatchNorm defaults to a one-pass variance (use_fast_variance=True): with a mean 10^4 times the "
              "spread, float32 cancellation makes the normalized output wrong by orders of magnitude.",
        area="hard-inputs",
        adapters=("flax-linen", "flax-nnx"),
        versions="flax 0.12.8, jax 0.10.2",
        severity="medium",
        source="flax/linen/normalization.py: _compute_stats(use_fast_variance=True) computes mean2 - square(mean), "
               "clamped at 0 (flax/nnx/nn/normalization.py shares it); use_fast_variance=False is two-pass",
        upstream=None,
        properties=("hard_input_training_output",),
    ),
    Finding(
        name="keras3_float64_layer_computes_in_float32",
        title="Keras 3 on the torch and jax backends computes a float64 BatchNormalization in float32, so a float64 "
              "model carries float32 rounding errors (about 1e-7).",
        area="precision",
        adapters=("keras-torch", "keras-jax"),
        versions="keras 3.15.1 (torch and jax backends)",
        severity="medium",
        source="keras/src/backend/common/dtypes.py: result_type maps float64 to float32 on every backend but "
               "tensorflow (BIT64_TO_BIT32_DTYPE); BatchNormalization.call computes in result_type(input, float32)",
        upstream="keras-team/keras#23704 (open; the same float64 -> float32 mapping, reported on Dense)",
        properties=("precision_output_dtype", "precision_state_dtype", "precision_training_output"),
    ),
    Finding(
        name="flax_linen_float64_batch_stats_start_float32",
        title="flax.linen's float64 BatchNorm initializes its batch_stats in float32; they turn float64 only after "
              "the first training step replaces them.",
        area="precision",
        adapters=("flax-linen",),
        versions="flax 0.12.8, jax 0.10.2 (jax_enable_x64)",
        severity="low",
        source="flax/linen/normalization.py: BatchNorm.__call__ creates ra_mean / ra_var with jnp.zeros / jnp.ones "
               "and no dtype (float32), then assigns momentum * ra + (1 - momentum) * stat, which promotes",
        upstream=None,
        properties=("precision_state_dtype", "precision_state_dtype_after_training"),
    ),
    Finding(
        name="keras_torch_device_scope_blocks_freeze",
        title="Keras 3 on the torch backend: a layer built inside `keras.device(...)` cannot be frozen; "
              "`layer.trainable = False` raises RuntimeError about non-leaf tensors.",
        area="traps",
        adapters=("keras-torch",),
        versions="keras 3.15.1 (torch backend), torch 2.13.0",
        severity="medium",
        source="keras/src/backend/torch/core.py: inside a device scope new variables are moved with .to(device), "
               "which makes them non-leaf; the trainable setter then calls requires_grad_(False), which torch refuses",
        upstream=None,
        properties=("keras_device_scope_then_freeze",),
    ),
    Finding(
        name="keras_torch_module_eval_ignored",
        title="Keras 3 on the torch backend: a Keras layer is a torch.nn.Module, but `module.eval()` does not freeze "
              "its BatchNormalization; the layer follows only its `training` argument and keeps updating.",
        area="freeze",
        adapters=("keras-torch",),
        versions="keras 3.15.1 (torch backend), torch 2.13.0",
        severity="medium",
        source="keras/src/backend/torch/layer.py: TorchLayer never reads nn.Module.training; keras/src/layers/"
               "layer.py resolves `training` from the call arguments only",
        upstream=None,
        properties=("freeze_normalizes_with", "freeze_running_stats_update", "finetune_bn_running_stats_update"),
        where=("torch_module_eval",),
    ),
    Finding(
        name="default_eps_and_momentum_differ",
        title="PyTorch and Keras disagree on BatchNorm defaults (eps 1e-5 vs 1e-3; momentum 0.1 weighting the new "
              "statistic vs 0.99 weighting the old one), so a port that keeps the target's defaults changes every "
              "output and running statistic.",
        area="porting",
        adapters=("torch", "keras-tensorflow", "keras-jax", "keras-torch", "tf_keras", "tf1-keras", "tf1-graph",
                  "flax-linen", "flax-nnx"),
        versions="torch 2.13.0, keras 3.15.1, tf_keras 2.21.0, flax 0.12.8",
        severity="low",
        source="torch/nn/modules/batchnorm.py: _NormBase.__init__(eps=1e-5, momentum=0.1); keras/src/layers/"
               "normalization/batch_normalization.py: __init__(momentum=0.99, epsilon=1e-3); flax/linen/"
               "normalization.py: BatchNorm(momentum=0.99, epsilon=1e-5). Documented in each; a divergence between "
               "frameworks, not a bug",
        upstream=None,
        properties=("default_eps", "default_momentum", "momentum_weights", "naive_port_inference_output"),
        reproduce_with="keras-torch",
    ),
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
              "though its docstring says it is 'only relevant when used inside a tf.distribute strategy': it "
              "disables the fused kernel (the running variance of rank-4 inputs becomes biased) and computes the "
              "variance one-pass, E[x^2] - E[x]^2 (output off by about 70 on a mean 1e4 times the spread); Keras 3 "
              "on TensorFlow takes the same one-pass path",
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


# ---- machinery (standard library only) ------------------------------------------------------------------------------

README_BEGIN = "<!-- findings:begin (generated by python3 -m bnsuite.findings --readme; do not edit) -->"
README_END = "<!-- findings:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demonstrated_by(prop: str, adapter: str, test: str = "") -> list[Finding]:
    """The findings a check of `prop` on `adapter` (in test `test`) demonstrates."""
    return [f for f in FINDINGS if prop in f.properties and adapter in f.adapters
            and (not f.where or any(w in test for w in f.where))]


def failure_note(prop: str, adapter: str, test: str = "") -> str:
    """What a failing check adds to its message when it demonstrates findings: the framework may have changed."""
    hits = demonstrated_by(prop, adapter, test)
    if not hits:
        return ""
    names = ", ".join(f.name for f in hits)
    return (f" [demonstrates finding {names}: if the framework fixed it, run {hits[0].reproduction} and update the "
            "finding and its declaration]")


def records() -> list[dict]:
    """The findings as results-file records (kind "finding"), so that reports read them from results files."""
    return [{**dataclasses.asdict(f), "reproduction": f.reproduction,
             "upstream_report": None if f.upstream else f.upstream_report} for f in FINDINGS]


def validate() -> list[str]:
    """One line per malformed finding (the meta tests require none)."""
    problems, seen = [], set()
    for f in FINDINGS:
        if f.name in seen:
            problems.append(f"{f.name}: declared twice")
        seen.add(f.name)
        if not f.name.isidentifier() or f.name != f.name.lower():
            problems.append(f"{f.name}: name must be snake_case")
        if f.severity not in SEVERITIES:
            problems.append(f"{f.name}: severity {f.severity!r} not in {SEVERITIES}")
        for field in ("title", "area", "versions", "source"):
            if not getattr(f, field):
                problems.append(f"{f.name}: empty {field}")
        if not f.adapters or not f.properties:
            problems.append(f"{f.name}: needs adapters and properties")
        if f.reproduce_with and f.reproduce_with not in f.adapters:
            problems.append(f"{f.name}: reproduce_with {f.reproduce_with!r} is not one of its adapters")
    return problems


def readme_section() -> str:
    """The README's findings section, between its two markers."""
    lines = [README_BEGIN, "",
             f"{len(FINDINGS)} findings, {sum(f.upstream is not None for f in FINDINGS)} with an upstream issue. Each "
             "is declared once in `bnsuite/findings.py`, demonstrated by checks that fail naming it if the framework "
             "changes, and reproduced standalone by `findings/<name>.py` (exit 1 while the behaviour is present, 0 "
             "once it is gone; the test command runs them all; alone: `.venv/bin/python -m pytest meta_tests -m reproductions`). "
             "Findings not yet reported upstream have the text of a report in `findings/<name>.upstream.md`.", ""]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    for f in sorted(FINDINGS, key=lambda f: order.get(f.severity, 9)):
        upstream = f.upstream or f"not reported upstream (draft: `{f.upstream_report}`)"
        lines += [f"- **{f.title}** ({f.severity}; {', '.join(f'`{a}`' for a in f.adapters)}; {f.versions})",
                  f"  Source: {f.source}. Upstream: {upstream}. Reproduce: `python {f.reproduction}`."]
    lines += ["", README_END]
    return "\n".join(lines)


def rewrite_readme(text: str) -> str:
    """README text with the findings section replaced; ValueError when the markers are missing."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError("README.md has no findings markers")
    return text[:start] + readme_section() + text[end + len(README_END):]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite.findings", description="The declared findings.")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's findings section")
    ap.add_argument("--check", action="store_true", help="with --readme: exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    problems = validate()
    for p in problems:
        print(f"findings: {p}", file=sys.stderr)
    if problems:
        return 2
    if not args.readme:
        for f in FINDINGS:
            print(f"{f.severity:6s} {f.name:50s} {f.upstream or 'not reported upstream'}")
        return 0
    path = os.path.join(ROOT, "README.md")
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        new = rewrite_readme(old)
    except (OSError, ValueError) as e:
        print(f"findings: {path}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print("findings: README.md's findings section is out of date; run python3 -m bnsuite.findings --readme",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    print(f"README.md: {len(FINDINGS)} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
