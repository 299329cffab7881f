"""Declared behaviour of each built-in adapter on inputs that break BatchNorm (suites/test_edge_inputs.py): an empty
batch, eps <= 0. Kept here, keyed by adapter id, instead of in each Declaration: the facts are one small table per
framework family, and an adapter class inherits the facts of the nearest class in its MRO that has an entry (so a
wrapper of a built-in adapter keeps them; a user's adapter declares its own by overriding
BatchNormAdapter.edge_inputs()). An adapter with no entry skips these cases, saying so.

Values are the strings suites/test_edge_inputs.py observes:
  empty_batch_training / empty_batch_inference: "error:<ExceptionClass>" or
      "empty output, running stats unchanged|nan|changed"
  eps_zero / eps_negative (training step on a batch whose channel 0 is constant): "error:<ExceptionClass>" or
      "accepted, constant channel -> nan|offset|inf|other"
NaN and inf in one channel need no declaration: the oracle defines where they may go (their own channel only).
"""

from __future__ import annotations

from typing import Mapping

from bnsuite.adapters.base import Cited

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
_K3 = "keras/src/layers/normalization/batch_normalization.py"
KERAS3 = {
    "empty_batch_training": Cited("empty output, running stats nan",
                                  f"{_K3}: BatchNormalization.call, _moments -> ops.moments, then "
                                  f"moving_mean.assign(moving_mean * momentum + mean * (1 - momentum)); {_NAN_MOMENTS}"),
    "empty_batch_inference": Cited("empty output, running stats unchanged", f"{_K3}: BatchNormalization.call, "
                                   "inference reads moving_mean/moving_variance and assigns nothing"),
    "eps_zero": Cited("accepted, constant channel -> nan", f"{_K3}: __init__ self.epsilon = float(epsilon), "
                                                            f"{_NO_EPS_CHECK}"),
    "eps_negative": Cited("accepted, constant channel -> nan", f"{_K3}: __init__, {_NO_EPS_CHECK}"),
}
_TFK = "tf_keras/src/layers/normalization/batch_normalization.py"
TF_KERAS = {
    "empty_batch_training": Cited("empty output, running stats nan",
                                  f"{_TFK}: BatchNormalizationBase.call -> _fused_batch_norm (rank 4) or "
                                  f"_moments (tf.nn.moments); _assign_moving_average; {_NAN_MOMENTS}; the same "
                                  "cause is reported for Sonnet in google-deepmind/sonnet#125 (open)"),
    "empty_batch_inference": Cited("empty output, running stats unchanged",
                                   f"{_TFK}: BatchNormalizationBase.call, inference uses the moving statistics"),
    "eps_zero": Cited("accepted, constant channel -> nan", f"{_TFK}: __init__ self.epsilon = epsilon, "
                                                            f"{_NO_EPS_CHECK}"),
    "eps_negative": Cited("accepted, constant channel -> nan", f"{_TFK}: __init__, {_NO_EPS_CHECK}"),
}
_FLAX = "flax/linen/normalization.py (nnx/nn/normalization.py likewise)"
FLAX = {
    "empty_batch_training": Cited("empty output, running stats nan",
                                  f"{_FLAX}: _compute_stats, jnp.mean over an empty axis; BatchNorm.__call__ "
                                  f"ra_mean.value = momentum * ra_mean.value + (1 - momentum) * mean; {_NAN_MOMENTS}"),
    "empty_batch_inference": Cited("empty output, running stats unchanged",
                                   f"{_FLAX}: use_running_average=True reads ra_mean/ra_var and writes nothing"),
    "eps_zero": Cited("accepted, constant channel -> nan", f"{_FLAX}: _normalize, mul = lax.rsqrt(var + epsilon); "
                                                            f"{_NO_EPS_CHECK}"),
    "eps_negative": Cited("accepted, constant channel -> nan", f"{_FLAX}: _normalize; {_NO_EPS_CHECK}"),
}

BY_ID: dict[str, Mapping[str, Cited[str]]] = {
    "torch": TORCH,
    "keras-tensorflow": KERAS3, "keras-jax": KERAS3, "keras-torch": KERAS3,
    "tf_keras": TF_KERAS, "tf1-keras": TF_KERAS, "tf1-graph": TF_KERAS,
    "flax-linen": FLAX, "flax-nnx": FLAX,
}


def for_adapter(cls) -> Mapping[str, Cited[str]]:
    """The facts of the nearest class in cls's MRO whose own `id` has an entry; empty if none."""
    for klass in cls.__mro__:
        own_id = vars(klass).get("id")
        if own_id in BY_ID:
            return BY_ID[own_id]
    return {}
