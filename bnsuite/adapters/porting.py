"""Moving BatchNorm state and hyper-parameters between frameworks: the documented conversion.

A port goes through one framework-neutral form, ``Portable``:

* scale, offset, running mean, running variance: per-channel vectors, copied unchanged (every framework stores the
  same four vectors; only their names differ: weight/bias/running_mean/running_var in torch, gamma/beta/
  moving_mean/moving_variance in Keras, scale/bias/mean/var in Flax);
* eps: copied unchanged (it is added to the variance inside the square root everywhere);
* momentum: converted through the canonical convention (weight of the NEW batch statistic). A framework whose
  momentum weights the OLD running value (Keras, Flax, TF) uses ``1 - canonical``: torch ``momentum=0.1`` is Keras /
  Flax ``momentum=0.9``, NOT 0.1 and not their default 0.99;
* channel layout: the channel axis is a property of the input, not of the state; a channels-first model ported to a
  channels-last framework needs its inputs transposed (N, C, ...) -> (N, ..., C), or the target layer built with
  ``axis=1``;
* the running-variance estimator CANNOT be converted: it is how a framework updates the running variance, not a
  number. After a port, the running variances of the two frameworks drift apart by the Bessel factor n/(n-1) of
  each update where one uses the unbiased and the other the biased estimator.

The "naive port" copies the four vectors and keeps the target framework's defaults for eps and momentum: what many
hand-written conversion scripts do.
"""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Declaration, State


@dataclasses.dataclass(frozen=True)
class Portable:
    eps: float
    momentum: float | None  # canonical: weight of the new batch statistic
    channels_last: bool
    state: State


def canonical_momentum(decl: Declaration, native: float | None) -> float | None:
    """The canonical momentum of a framework's own momentum value."""
    if native is None:
        return None
    return native if decl.momentum_weights.value == "new" else 1.0 - native


def native_momentum(decl: Declaration, canonical: float | None) -> float | None:
    """A canonical momentum in a framework's own convention (the conversion is its own inverse)."""
    return canonical_momentum(decl, canonical)


def export(decl: Declaration, eps: float, momentum: float | None, channels_last: bool, state: State) -> Portable:
    """From a framework's own hyper-parameters and state to the neutral form."""
    return Portable(eps=eps, momentum=canonical_momentum(decl, momentum), channels_last=channels_last,
                    state=state.copy())


def import_(decl: Declaration, p: Portable) -> dict:
    """The neutral form as the target framework's own constructor values."""
    return {"eps": p.eps, "momentum": native_momentum(decl, p.momentum), "state": p.state.copy(),
            "transpose_inputs": p.channels_last != decl.default_channels_last.value}


def defaults(decl: Declaration) -> tuple[float, float]:
    """A framework's default (eps, own-convention momentum)."""
    return decl.default_eps.value, decl.default_momentum.value


def estimator_on(decl: Declaration, rank: int) -> str:
    """The running-variance estimator a framework uses on a rank-`rank` input with its default layout.

    TF's Keras layers take the fused kernel for rank 4 and 5 (tf_keras/layers/normalization/batch_normalization.py,
    build: `self.fused = rank in (4, 5)`), the non-fused path otherwise; see adapters/tf_keras_v2.FUSED_NOTE.
    """
    table = decl.running_var_estimator.value
    if "fused" in table:
        return table["fused"] if rank in (4, 5) else table["non-fused"]
    return table.get("default", "unknown")
