"""MLX's compiler: mx.compile around the mlx adapter's BatchNorm module, once with the module's state captured
(inputs=/outputs= of mx.compile, MLX's recipe for stateful modules) and once as a plain closure. Gradients through
nn.value_and_grad inside the compiled function; the freeze idioms as the adapter's SGD step, compiled.
"""

from __future__ import annotations

import time

from bnsuite.adapters.base import Cited, Grads
from bnsuite.lanes.compile import CompileLane, PathFacts

_COMPILE = ("mlx/core/__init__.pyi: compile(fun, inputs=None, outputs=None, shapeless=False): 'inputs ... will be "
            "captured during the function compilation along with the inputs to fun', 'outputs ... will be captured "
            "and updated in a compiled function'; the traced graph is cached by the inputs' shapes and dtypes")
_BN = ("mlx/nn/layers/normalization.py: BatchNorm.__call__ branches in Python on self.training and reassigns "
       "self.running_mean / self.running_var (arrays, not in-place updates)")
_MODE = ("the branch on self.training runs once, at trace time: bn.eval() after the first compiled call changes "
         "nothing, the cached training-mode graph keeps normalizing with the batch and, with the state captured, "
         "keeps moving the running statistics (finding mlx_compile_ignores_eval_after_first_call)")
_GRADS = ("mlx/nn/utils.py: value_and_grad(model, fn) differentiates model.trainable_parameters() (model.update "
          "then fn); the input's gradient by mx.grad over the same loss with the statistics put back, so the step "
          "updates them once")
_AGREE = "observed bitwise against eager on mlx 0.32.4 (the compiler fuses elementwise ops; the reductions are the same)"

PATHS = {
    "mx.compile-state-captured": Cited(PathFacts(
        "mx.compile(lambda x: bn(x), inputs=bn.state, outputs=bn.state); gradients: the same capture around "
        "nn.value_and_grad(bn, loss); freeze idioms: the adapter's SGD step compiled capturing [bn.state, optimizer.state]",
        eval_switch="batch", agreement="bitwise", cumulative="n/a",
        freeze=("train", "eval", "freeze", "freeze_keys_weight_bias", "eval_freeze"),
        facts={"eval_call_moves_running_stats": "yes"}),
        f"{_COMPILE}; {_BN}; with the state captured the reassigned statistics come back as outputs and land in "
        f"the module (observed); {_MODE}; {_GRADS}; {_AGREE}"),
    "mx.compile-closure": Cited(PathFacts(
        "mx.compile(lambda x: bn(x)) with the module's state not captured", running_stats="error:RuntimeError",
        eval_switch="batch", grads="error:RuntimeError", agreement="bitwise", cumulative="n/a",
        facts={"train_output_evaluates": "yes"}),
        f"{_COMPILE}; {_BN}; without the capture the statistics assigned during the trace are the compiler's "
        "placeholders: the output evaluates, but reading bn.running_mean raises RuntimeError '[eval] Attempting to "
        "eval an array without a primitive. If you are compiling a function, make sure all the inputs and outputs "
        f"are captured' (observed; the message links MLX's compile guide, 'Pure Functions'); {_MODE}"),
}


def _stats(m) -> dict:
    """The module's running statistics, by attribute."""
    return {k: m[k] for k in ("running_mean", "running_var") if k in m}


class MlxCompile(CompileLane):
    """The two mx.compile paths over a fresh mlx adapter layer each."""

    framework = "mlx"
    declare = classmethod(lambda cls: PATHS)

    def run(self, path, spec, state, batches, dy, grads=True):
        if path not in PATHS:
            raise KeyError(path)
        start = time.perf_counter()
        return self._compiled(self._layer(spec, state), path == "mx.compile-state-captured", batches, dy, grads,
                              start)

    def _compiled(self, bn, captured, batches, dy, grads, start):
        import mlx.core as mx
        import mlx.nn as nn

        m = bn.module
        capture = {"inputs": [m.state], "outputs": [m.state]} if captured else {}
        dyt = bn._in(dy)

        def loss(inp):
            y = m(inp)
            return (y * dyt).sum(), y

        def with_grads(inp):
            saved = _stats(m)
            gx = mx.grad(lambda a: loss(a)[0])(inp)
            m.update(saved)  # the input's gradient pass must not update the statistics a second time
            (_, y), gparams = nn.value_and_grad(m, loss)(inp)
            return y, gx, gparams

        call = mx.compile(lambda inp: m(inp), **capture)
        call_grads = mx.compile(with_grads, **capture)
        facts = {}

        def step(x, want):
            m.train(True)
            if want and captured:  # without the capture the step fails on its statistics before any gradient
                y, gx, gparams = call_grads(bn._in(x))
            else:
                y, gx, gparams = call(bn._in(x)), None, None
            mx.eval(y)
            facts["train_output_evaluates"] = "yes"
            mx.eval(m.state)  # the statistics the call left in the module (placeholders raise)
            g = None if gparams is None else Grads(bn._out(gx), *(None if k not in gparams else bn._np(gparams[k])
                                                                   for k in ("weight", "bias")))
            return bn._out(y), g

        def infer(x):
            before = {k: bn._np(v) for k, v in _stats(m).items()} if captured else {}
            m.eval()
            y = call(bn._in(x))
            mx.eval(y)
            if captured:
                after = {k: bn._np(v) for k, v in _stats(m).items()}
                facts["eval_call_moves_running_stats"] = "yes" if any(
                    (before[k] != after[k]).any() for k in before) else "no"
            return bn._out(y)

        out = self._run_steps(_Readable(bn), step, infer, _Readable(bn).get_state, batches, grads, start)
        out.facts.update(facts)
        return out

    def freeze(self, path, idiom, spec, state, x, dy, lr):
        import mlx.core as mx
        import mlx.optimizers as optim

        from bnsuite.adapters.mlx_bn import freeze_module

        if path != "mx.compile-state-captured":
            raise NotImplementedError(f"{type(self).__name__}: no freeze idioms under {path}")
        bn = self._layer(spec, state)
        m = bn.module
        freeze_module(bn.freeze_recipe(idiom), m)
        opt = optim.SGD(learning_rate=lr)
        dyt = bn._in(dy)

        def loss(params, inp):
            m.update(params)
            y = m(inp)
            return (y * dyt).sum(), y

        captured = [m.state, opt.state]

        def sgd_step(inp):
            # the adapter's eager step: the trainable parameters and the input differentiated (nn.value_and_grad
            # alone refuses a module with nothing trainable: ValueError '[grad] Must specify at least one argument')
            (_, y), (g, _) = mx.value_and_grad(loss, argnums=(0, 1))(m.trainable_parameters(), inp)
            opt.update(m, g)
            return y

        y = mx.compile(sgd_step, inputs=captured, outputs=captured)(bn._in(x))
        mx.eval(y, m.state, opt.state)
        return bn._out(y), bn.get_state()


class _Readable:
    """The adapter's state where the module holds readable arrays; None where the compiler left placeholders."""

    def __init__(self, bn):
        self.bn = bn

    def get_state(self):
        try:
            return self.bn.get_state()
        except RuntimeError:
            return None
