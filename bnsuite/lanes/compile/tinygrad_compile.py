"""tinygrad's compiler, TinyJit: the first call runs the function as it is, the second captures the kernels it
realizes, and every later call replays them without running the Python again. Two paths over the tinygrad adapter's
layer: a jitted training step that realizes the running statistics with its outputs, and a jitted forward that
realizes its output only.
"""

from __future__ import annotations

import time

import numpy as np

from bnsuite.adapters.base import Cited, Grads
from bnsuite.lanes.compile import CompileLane, PathFacts

_JIT = ("tinygrad/engine/jit.py: _TinyJit.__call__ runs fxn as it is while cnt == 0, captures the linears that the "
        "call realizes while cnt == 1 (Tensor.realize(*get_parameters(ret)) plus what fxn realizes itself) and from "
        "cnt >= 2 replays CapturedJit without calling fxn")
_BN = ("tinygrad/nn/__init__.py: BatchNorm.__call__ reads TRAINING in Python and, in training, queues "
       "running_mean.assign(...), running_var.assign(...) and num_batches_tracked += 1 (lazy until realized)")
_ROUNDING = ("a captured call schedules its kernels from what it realizes together, so reductions fuse and order "
             "differently from the adapter's eager calls (bnsuite.adapters.tinygrad_bn: forward realizes y with the "
             "statistics, backward runs apart)")

PATHS = {
    "TinyJit-train-step": Cited(PathFacts(
        "TinyJit(step) with step(x, dy) = y = bn(x); (y * dy).sum().backward(); realize y, the gradients and "
        "bn's running statistics and step counter (what Optimizer.schedule_step returns as buffers); called in "
        "Context(TRAINING=1), warmed up by two calls (run, capture) on the first batch and the loaded statistics "
        "written back in place, so every measured step is a replay; inference through a second TinyJit(bn(x)) "
        "called three times outside it",
        cumulative="n/a", facts={"num_batches_tracked": "7"}),
        f"{_JIT}; {_BN}: realized inside the captured call, the assigns are captured kernels writing the statistics' "
        "buffers, so each replay updates them (tinygrad/nn/optim.py: Optimizer keeps non-parameters as buffers and "
        f"schedule_step realizes them); num_batches_tracked: 2 warm-up calls + 5 replays; {_ROUNDING}: observed on "
        "tinygrad 0.14.0 outputs and statistics bitwise, dscale 1e-6 off eager"),
    "TinyJit-forward": Cited(PathFacts(
        "TinyJit(lambda x: bn(x).realize()) called in Context(TRAINING=1) for the training steps, then the same "
        "jitted function called outside it for inference",
        running_stats="first-2", eval_switch="batch", grads="not observable", cumulative="n/a",
        facts={"num_batches_tracked": "2"}),
        f"{_JIT}; {_BN}: only y is realized inside the call, so the capture holds no assign kernel: the first two "
        "calls run the Python (their assigns realize when the statistics are read) and the replays leave the "
        "statistics where the capture left them (finding tinygrad_tinyjit_drops_unrealized_running_stats; "
        "tinygrad/tinygrad#16618); inference outside TRAINING replays the captured training-mode kernels (TRAINING "
        "is read in Python by BatchNorm.calc_stats, which a replay does not run): batch statistics; the path "
        f"returns no gradients; {_ROUNDING}: observed outputs 5e-7 off eager"),
}


def _real(bn, a):
    """A realized input tensor for a jitted call (TinyJit takes realized buffers as its inputs)."""
    return bn._in(a).contiguous().realize()


def _train_step(bn, state, batches, dy):
    """step and infer of "TinyJit-train-step": the jitted step warmed up (run, capture), then the loaded state back."""
    from tinygrad import Tensor, TinyJit

    from bnsuite.adapters.tinygrad_bn import realize_step, training_mode

    layer = bn.bn

    def traced(x, d):
        layer.weight.grad = layer.bias.grad = None
        y = layer(x)
        (y * d).sum().backward()
        outs = (y, x.grad, layer.weight.grad, layer.bias.grad)
        realize_step(Tensor, [layer], *outs)
        return outs

    jit = TinyJit(traced)
    with training_mode(True):
        for _ in range(2):  # TinyJit's first call runs fxn, the second captures
            jit(_real(bn, batches[0]), _real(bn, dy))
    bn.set_state(state)

    def step(x, want):
        with training_mode(True):
            y, dx, ds, do = jit(_real(bn, x), _real(bn, dy))
        return bn._out(y), (Grads(bn._out(dx), bn._np(ds), bn._np(do)) if want else None)

    infer_jit = TinyJit(lambda x: layer(x).realize())

    def infer(x):
        with training_mode(False):
            for _ in range(3):  # the third call is a replay
                y = infer_jit(_real(bn, x))
            return bn._out(y)
    return step, infer


def _forward(bn, state, batches, dy):
    """step and infer of "TinyJit-forward": one jitted forward, called in and then outside training mode."""
    from tinygrad import TinyJit

    from bnsuite.adapters.tinygrad_bn import training_mode

    jit = TinyJit(lambda x: bn.bn(x).realize())

    def step(x, want):
        with training_mode(True):
            return bn._out(jit(_real(bn, x))), None

    def infer(x):
        with training_mode(False):
            return bn._out(jit(_real(bn, x)))
    return step, infer


_BUILDERS = {"TinyJit-train-step": _train_step, "TinyJit-forward": _forward}


class TinygradCompile(CompileLane):
    framework = "tinygrad"

    def run(self, path, spec, state, batches, dy, grads=True):
        start = time.perf_counter()
        bn = self._layer(spec, state)
        step, infer = _BUILDERS[path](bn, state, batches, dy)
        out = self._run_steps(bn, step, infer, bn.get_state, batches, grads, start)
        out.facts["num_batches_tracked"] = str(int(bn.bn.num_batches_tracked.numpy()))
        return out

    @classmethod
    def declare(cls):
        return PATHS
