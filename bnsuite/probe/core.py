"""The probe: run a model in inference mode at several batch sizes, compare every layer's output with the full batch.

In inference mode every standard layer (dense, conv, BatchNorm with running statistics, activations) maps each sample
on its own, so a sample's output must not depend on the other samples of its batch. A layer that normalizes with
batch statistics (torch BatchNorm with track_running_stats=False, a BN left in training mode, a custom layer that
subtracts the batch mean) breaks that; the probe names the FIRST such layer in execution order (every later layer
inherits the change).

Default tolerance: a change counts when max|y_b - y_full| > tol * max|y_full| for that layer, tol = 1e-4.
Batch-size-dependent kernels (GEMM blocking, vectorized tails) reorder float32 reductions of K terms, changing a
result by ~K u max|term| with u = 2^-24 = 6e-8, i.e. < 1e-5 relative for K up to ~100; batch statistics change a
layer's output by O(1/sqrt(n)) relative (0.1 to 1 for the batch sizes probed). 1e-4 sits orders of magnitude from
both. Pass ``tol`` to change it (e.g. larger for float16 models).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

import numpy as np

FRAMEWORKS = ("torch", "keras", "flax")
DEFAULT_TOL = 1e-4


class ProbeError(Exception):
    """Bad input to the probe; str() is one line for the user."""


@dataclasses.dataclass
class LayerChange:
    index: int
    name: str
    type: str
    max_abs: float  # max |y_b - y_full| over the probed batch sizes
    max_rel: float  # max_abs / max |y_full|
    worst_batch_size: int
    comparable: bool = True  # False when the output has no leading batch dimension

    def line(self) -> str:
        if not self.comparable:
            return f"  {self.index:3d} {self.name} ({self.type}): not compared (output has no batch dimension)"
        return (f"  {self.index:3d} {self.name} ({self.type}): max abs change {self.max_abs:.3g}, relative "
                f"{self.max_rel:.3g} (batch size {self.worst_batch_size})")


@dataclasses.dataclass
class ProbeReport:
    framework: str
    batch_sizes: list[int]
    full_batch: int
    tol: float
    layers: list[LayerChange]
    first: LayerChange | None
    failed: dict[int, str] = dataclasses.field(default_factory=dict)  # batch size -> error the model raised there

    @property
    def invariant(self) -> bool:
        return self.first is None and not self.failed

    @property
    def verdict(self) -> str:
        if self.first is None and self.failed:
            return (f"not invariant: the model raised at batch size(s) {', '.join(map(str, self.failed))} but not "
                    f"at {self.full_batch}, and no layer output changed beyond tolerance at the other sizes")
        if self.first is None:
            worst = max((l.max_rel for l in self.layers if l.comparable), default=0.0)
            return (f"invariant within tolerance: no layer's output changes by more than {self.tol:g} of its scale "
                    f"(largest relative change {worst:.3g} over {len(self.layers)} layers)")
        f = self.first
        return (f"first batch-dependent layer: {f.name!r} ({f.type}), max abs change {f.max_abs:.3g} "
                f"(relative {f.max_rel:.3g}) at batch size {f.worst_batch_size} vs {self.full_batch}")

    def __str__(self) -> str:
        head = (f"batch-dependence probe ({self.framework}, inference mode): batch sizes "
                f"{', '.join(map(str, self.batch_sizes))} vs full batch {self.full_batch}, tolerance {self.tol:g} "
                "relative to each layer's output scale")
        lines = [head, ("BATCH-DEPENDENT: " if self.first else "OK: ") + self.verdict]
        lines += [f"note: the model raised at batch size {b} (the full batch ran): {m}" for b, m in self.failed.items()]
        lines += ["per layer:", *(l.line() + ("   <-- first" if l is self.first else "") for l in self.layers)]
        return "\n".join(lines)


# -- framework detection -------------------------------------------------------------------------------------------
def _is_torch(model) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(model, torch.nn.Module)


def _keras_package(model):
    """The Keras package `model` belongs to (keras 3 or tf_keras), else None."""
    for name in ("keras", "tf_keras"):
        if name in sys.modules and isinstance(model, sys.modules[name].Model):
            return sys.modules[name]
    return None


def _is_keras(model) -> bool:
    return _keras_package(model) is not None


def _flax_parts(model):
    """(module, variables, apply_kwargs) or None."""
    if not isinstance(model, tuple) or len(model) not in (2, 3) or "flax" not in sys.modules:
        return None
    import flax.linen as nn

    if not isinstance(model[0], nn.Module):
        return None
    kwargs = model[2] if len(model) == 3 else {}
    if not isinstance(model[1], dict) and not hasattr(model[1], "keys"):
        raise ProbeError("flax: the second element must be the module's variables (a dict such as "
                         "{'params': ..., 'batch_stats': ...})")
    if not isinstance(kwargs, dict):
        raise ProbeError("flax: the third element must be a dict of keyword arguments for module.apply")
    return model[0], model[1], kwargs


def detect(model) -> str:
    # Keras first: a Keras 3 model on the torch backend is a torch.nn.Module too, whose torch leaves hide its layers.
    if _is_keras(model):
        return "keras"
    if _is_torch(model):
        return "torch"
    if _flax_parts(model) is not None:
        return "flax"
    raise ProbeError(f"not a model the probe knows: {type(model).__module__}.{type(model).__qualname__} (expected a "
                     "torch.nn.Module, a keras.Model, or a (flax.linen.Module, variables[, apply_kwargs]) tuple)")


# -- per-framework runners: batch -> list of (name, type, output array) in execution order ---------------------------
Runner = Callable[[np.ndarray], list[tuple[str, str, np.ndarray]]]


def _first_array(out):
    if isinstance(out, (tuple, list)):
        for o in out:
            a = _first_array(o)
            if a is not None:
                return a
        return None
    if isinstance(out, dict):
        return _first_array(list(out.values()))
    return out


def _torch_runner(model) -> tuple[Runner, Callable[[], None]]:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ProbeError(f"framework 'torch' needs a torch.nn.Module, got {type(model).__qualname__}")
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())] or [("model", model)]
    log: list = []

    def make_hook(name):
        def hook(mod, inp, out):
            t = _first_array(out)
            if isinstance(t, torch.Tensor):
                log.append((name, type(mod).__name__, t.detach().to("cpu", torch.float64).numpy()))
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in leaves]

    def run(x):
        log.clear()
        xt = torch.from_numpy(np.ascontiguousarray(x))
        if xt.is_floating_point():
            xt = xt.to(dtype)
        with torch.no_grad():
            out = model(xt.to(device))
        res = _number_repeats(list(log))
        t = _first_array(out)
        if isinstance(t, torch.Tensor) and not res:
            res.append(("output", type(model).__name__, t.detach().to("cpu", torch.float64).numpy()))
        return res

    def close():
        for h in handles:
            h.remove()
        model.train(was_training)

    return run, close


def _first_leaf(out):
    """The first tensor of a layer's output structure, in keras.tree.flatten's order (dict keys sorted); written out
    because keras.tree is public only from Keras 3.3.0 (the 'Generate API' commit 1937d487b0)."""
    while isinstance(out, (list, tuple, dict)):
        out = out[sorted(out)[0]] if isinstance(out, dict) else out[0]
    return out


def _keras_runner(model) -> tuple[Runner, Callable[[], None]]:
    keras = _keras_package(model)
    if keras is None:
        raise ProbeError(f"framework 'keras' needs a keras.Model, got {type(model).__qualname__}")
    try:
        inputs = model.inputs
        layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
        outs = [_first_leaf(l.output) for l in layers]
        inner = keras.Model(inputs, outs)
    except Exception as e:
        raise ProbeError(f"keras: cannot read every layer's output ({type(e).__name__}: {_one_line(e)}); the probe "
                         "needs a functional or built Sequential model") from None

    # On JAX, Keras' compiled inference (one program per batch shape, as predict() runs it); an eager call there
    # compiles every operation of the model on its own, for every batch size.
    on_jax = hasattr(keras, "backend") and getattr(keras.backend, "backend", lambda: "")() == "jax"

    def run(x):
        ys = inner.predict_on_batch(x) if on_jax else inner(x, training=False)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        to_numpy = keras.ops.convert_to_numpy if hasattr(keras, "ops") else np.asarray  # tf_keras has no ops
        return [(l.name, type(l).__name__, np.asarray(to_numpy(y), np.float64))
                for l, y in zip(layers, ys)]

    return run, lambda: None


def _flax_runner(model) -> tuple[Runner, Callable[[], None]]:
    parts = _flax_parts(model)
    if parts is None:
        raise ProbeError("framework 'flax' needs a (flax.linen.Module, variables[, apply_kwargs]) tuple, got "
                         f"{type(model).__qualname__}")
    module, variables, kwargs = parts
    import jax.numpy as jnp
    from flax import traverse_util

    # Collections the user's apply kwargs make mutable (e.g. "batch_stats" for a BatchNorm in training mode) stay
    # mutable; their updates are discarded, so every batch runs on the same variables.
    user_mutable = kwargs.get("mutable", ())
    if isinstance(user_mutable, str):
        user_mutable = [user_mutable]
    mutable = True if user_mutable is True else \
        ["intermediates", *[c for c in user_mutable or () if c != "intermediates"]]
    kwargs = {k: v for k, v in kwargs.items() if k != "mutable"}

    def run(x):
        _, state = module.apply(variables, jnp.asarray(x), capture_intermediates=True,
                                mutable=mutable, **kwargs)
        flat = traverse_util.flatten_dict(dict(state["intermediates"]))
        res = []
        for path, vals in flat.items():
            name = "/".join(p for p in path if p != "__call__") or "output"
            mod_type = _flax_type(module, path[:-1])
            for i, v in enumerate(vals if isinstance(vals, tuple) else (vals,)):
                a = _first_array(v)
                res.append((name if i == 0 else f"{name}#{i}", mod_type, np.asarray(a, np.float64)))
        return res

    return run, lambda: None


def _flax_type(module, path) -> str:
    """Class name of the submodule at `path` where it is a bound attribute (setup-style), else from its auto name."""
    if not path:
        return type(module).__name__
    last = path[-1]
    base = last.rsplit("_", 1)[0] if last.rsplit("_", 1)[-1].isdigit() else last
    return base


RUNNERS = {"torch": _torch_runner, "keras": _keras_runner, "flax": _flax_runner}


def _number_repeats(entries):
    seen: dict[str, int] = {}
    out = []
    for name, typ, a in entries:
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append((name if k == 0 else f"{name}#{k}", typ, a))
    return out


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else ""


# -- the probe -------------------------------------------------------------------------------------------------------
def find_batch_dependence(model: Any, x: Any, framework: str | None = None, batch_sizes=(1, 2, 8, None),
                          tol: float | None = None) -> ProbeReport:
    """Run `model` in inference mode on `x` in batches of each size (None = the full batch) and report, layer by
    layer, the first layer whose output changes by more than `tol` (relative to that layer's output scale)."""
    if framework is not None and framework not in FRAMEWORKS:
        raise ProbeError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
    try:
        x = np.asarray(x)
    except Exception as e:
        raise ProbeError(f"input is not an array: {_one_line(e)}") from None
    if x.ndim < 1 or x.shape[0] < 1 or x.dtype == object:
        raise ProbeError(f"input must be an array with a leading batch dimension, got shape {x.shape} "
                         f"dtype {x.dtype}")
    full = x.shape[0]
    sizes = []
    for b in batch_sizes:
        b = full if b is None else b
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ProbeError(f"batch size {b!r} is not a positive integer")
        if full % b:
            raise ProbeError(f"batch size {b} does not divide the input's {full} samples")
        if b not in sizes:
            sizes.append(int(b))
    tol = DEFAULT_TOL if tol is None else float(tol)
    if not tol >= 0:
        raise ProbeError(f"tolerance must be >= 0, got {tol!r}")
    fw = framework or detect(model)
    run, close = RUNNERS[fw](model)
    try:
        def call(xb):
            try:
                return run(xb)
            except ProbeError:
                raise
            except Exception as e:
                raise ProbeError(f"the model raised {type(e).__name__} on input of shape {xb.shape}: "
                                 f"{_one_line(e)}") from None

        ref = call(x)
        if not ref:
            raise ProbeError(f"{fw}: the model produced no layer outputs to compare")
        names = [(n, t) for n, t, _ in ref]
        changes = {n: [0.0, 0.0, full] for n, _ in names}
        comparable = {n: a.ndim >= 1 and a.shape[0] == full for n, _, a in ref}
        ref_arr = {n: a for n, _, a in ref}
        failed: dict[int, str] = {}
        for b in sizes:
            if b == full:
                continue
            try:
                chunks = [call(x[i:i + b]) for i in range(0, full, b)]
            except ProbeError as e:  # the full batch ran, so this is batch-size dependence too: report it
                failed[b] = str(e)
                continue
            for j, (n, _) in enumerate(names):
                if not comparable[n]:
                    continue
                parts = [c[j][2] for c in chunks if j < len(c) and c[j][0] == n]
                if len(parts) != len(chunks) or any(p.ndim < 1 or p.shape[0] != b for p in parts):
                    comparable[n] = False
                    continue
                y = np.concatenate(parts, axis=0)
                if y.shape != ref_arr[n].shape:
                    comparable[n] = False
                    continue
                d = float(np.max(np.abs(y - ref_arr[n]))) if y.size else 0.0
                if not np.isfinite(d):
                    d = float("inf")
                if d > changes[n][0]:
                    changes[n] = [d, 0.0, b]
        layers, first = [], None
        for i, (n, t) in enumerate(names):
            scale = float(np.max(np.abs(ref_arr[n]))) if ref_arr[n].size else 0.0
            d, _, b = changes[n]
            rel = d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))
            lc = LayerChange(i, n, t, d, rel, b, comparable[n])
            layers.append(lc)
            if first is None and lc.comparable and rel > tol:
                first = lc
        return ProbeReport(fw, sizes, full, tol, layers, first, failed)
    finally:
        close()
