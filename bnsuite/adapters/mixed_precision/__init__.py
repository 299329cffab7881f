"""Mixed precision as users run it: a BatchNorm whose parameters are NOT built in the activations' low-precision dtype.

The precision suite builds each layer IN float16/bfloat16. Users instead keep float32 parameters and run mixed
precision, or feed low-precision activations into a layer built with defaults. An idiom is named "<kind>-<dtype>",
where <dtype> (float16 or bfloat16) is the dtype of the activations that reach the layer (the output of a previous
layer run in that precision):

* ``defaults``: the layer built with the framework's defaults (float32 parameters), fed <dtype> activations;
* ``autocast``: torch, the float32 layer called inside ``torch.autocast("cpu", dtype=<dtype>)``;
* ``policy``: Keras 3 / tf_keras, the layer built while the global dtype policy is ``mixed_<dtype>`` (set, then
  restored: policies are process-global state);
* ``dtype``: Flax, ``BatchNorm(dtype=<dtype>)`` (param_dtype left at float32);
* ``param_dtype``: Flax, ``BatchNorm(param_dtype=<dtype>)`` (dtype left at None);
* ``float32_layer``: TF1 graph, ``tf.compat.v1.layers.BatchNormalization(dtype="float32")`` fed a <dtype> placeholder
  (``defaults`` is the ``tf.compat.v1.layers.batch_normalization`` function, which takes the placeholder's dtype).

Each runner uses the framework's real machinery, applies the canonical Spec (eps, momentum, channel axis), loads the
given State, runs ONE training step and one inference step on the same input, and reports dtypes and values. This
package holds what the idioms share; each framework's runner and declared facts live in its own module (torch_mixed,
keras_mixed, tf1_mixed, flax_mixed): its adapters name the runner as their ``mixed_precision`` capability
(``step(cls, idiom, spec, state, x) -> MixedRun``) and read ``declared()`` into their declaration, which the suite
(suites/test_mixed_precision.py) checks the runner against. Framework imports happen inside the runners.
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import Cited, MixedRule, Unsupported

LOW = ("float16", "bfloat16")


def parse(idiom: str) -> tuple[str, str]:
    """"autocast-bfloat16" -> ("autocast", "bfloat16")."""
    kind, _, low = idiom.rpartition("-")
    if low not in LOW or not kind:
        raise Unsupported(f"unknown mixed-precision idiom {idiom!r}")
    return kind, low


def placeholder_shape(spec) -> tuple:
    """The input shape with only the channel axis known, as a placeholder or build() takes it."""
    shape = [None] * spec.rank
    shape[spec.channel_axis] = spec.num_features
    return tuple(shape)


def as_f64(a) -> np.ndarray:
    """A low-precision array as float64 (through float32, which holds every 16-bit value exactly)."""
    return np.asarray(np.asarray(a).astype(np.float32), np.float64)


def rule(output: str, params: str, src: str, stats: str = "float32", state: str = "float32") -> Cited[MixedRule]:
    return Cited(MixedRule("yes", output=output, stats=stats, params=params, state=state), src)


def both(make) -> dict:
    return {f"{kind}-{low}": rule for low in LOW for kind, rule in make(low).items()}



@contextlib.contextmanager
def keras_policy(get, set_, name: str | None):
    """Set a process-global dtype policy for the block and restore the previous one."""
    if name is None:
        yield
        return
    old = get()
    set_(name)
    try:
        yield
    finally:
        set_(old)
