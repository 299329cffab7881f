"""PaddlePaddle's graph paths: paddle.jit.to_static around the adapter's layer (dynamic-to-static: the layer's forward
traced into a PIR program and run by the static executor), and a paddle.static Program built by hand (static mode,
an Executor, the parameters and statistics in a Scope). Each path runs the paddle adapter's layer and cases.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from bnsuite.adapters.base import Cited, Grads, State
from bnsuite.lanes.compile import CompileLane, PathFacts

_BN = ("paddle/nn/layer/norm.py: _BatchNormBase.forward -> paddle/nn/functional/norm.py: batch_norm, which in PIR "
       "mode (in_dynamic_or_pir_mode) calls the same _C_ops.batch_norm as eagerly, with is_test = not training; "
       "paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel updates mean_out/variance_out in place")
_TO_STATIC = ("paddle/jit/api.py: to_static(layer) converts layer.forward into a StaticFunction; "
              "paddle/jit/dy2static/program_translator.py: the program cache keys on layer.training, so eval() "
              "after a training call traces a second program with is_test=True; "
              "paddle/jit/dy2static/pir_partial_program.py: runs the program on the layer's own parameters and "
              "buffers (the statistics update lands in the layer) and builds its backward")
_STATIC = ("paddle/static: enable_static(), a Program under program_guard, paddle.static.data inputs, "
           "paddle.static.gradients for the backward and Executor(CPUPlace()).run against a Scope that holds the "
           "parameters and the running statistics; PIR (paddle.framework.in_pir_mode) has no "
           "Program.clone(for_test=True) (TypeError), so inference is a second Program built with layer.eval() on "
           "the same parameter names")
_SAME_KERNEL = "the same CPU batch_norm kernel as eagerly, on the same float32 values: observed bitwise on paddle 3.3.1"

PATHS = {
    "paddle.jit.to_static": Cited(PathFacts(
        "paddle.jit.to_static(bn, full_graph=True); bn.train() / bn.eval() on the converted layer",
        agreement="bitwise", cumulative="error:TypeError",
        # the "eval" idiom is left out: under to_static it trains nothing (the fact eval_mode_param_grads)
        freeze=("stop_gradient", "no_grad", "eval_stop_gradient"),
        facts={"train_program_bn_op": "pd_op.batch_norm_ is_test=False",
               "eval_program_bn_op": "pd_op.batch_norm_ is_test=True",
               "eval_mode_output_stop_gradient": "False", "eval_mode_param_grads": "none"}),
        f"{_TO_STATIC}; {_BN}; {_SAME_KERNEL}; momentum=None: {_BN.split(' -> ')[0]} passes it to _C_ops.batch_norm, "
        "which raises TypeError ('argument (position 7) must be double'); in eval() the program is the inference one "
        "(pir_partial_program.py: no backward program in infer mode), yet its output keeps stop_gradient=False and "
        "backward() runs without an error and leaves every parameter's grad None (eagerly an eval() layer has "
        "gradients): finding paddle_to_static_eval_backward_no_gradients"),
    "paddle.static-Program": Cited(PathFacts(
        "paddle.enable_static(); Program with paddle.static.data -> nn.BatchNorm2D -> paddle.static.gradients; "
        "Executor.run per step; inference Program built with layer.eval()",
        agreement="bitwise", cumulative="error:TypeError",
        facts={"train_program_bn_op": "pd_op.batch_norm_ is_test=False",
               "eval_program_bn_op": "pd_op.batch_norm_ is_test=True"}),
        f"{_STATIC}; {_BN}; {_SAME_KERNEL}"),
}


def _bn_op(program) -> str:
    """The program's batch-norm op and its is_test attribute, as "<name> is_test=<bool>"."""
    for op in program.global_block().ops:
        if "batch_norm" in op.name():
            return f"{op.name()} is_test={op.attrs().get('is_test')}"
    return "no batch_norm op"


class PaddleCompile(CompileLane):
    framework = "paddle"

    @classmethod
    def declare(cls):
        return PATHS

    def run(self, path, spec, state, batches, dy, grads=True):
        start = time.perf_counter()
        bn = self._layer(spec, state)
        if path == "paddle.jit.to_static":
            return self._to_static(bn, batches, dy, grads, start)
        if path == "paddle.static-Program":
            return self._static(bn, spec, batches, dy, grads, start)
        raise KeyError(path)

    @staticmethod
    def _grads(bn, xt, layer):
        g = lambda p: None if p is None or p.grad is None else bn._np(p.grad)
        return Grads(bn._out(xt.grad), g(layer.weight), g(layer.bias))

    def _to_static(self, bn, batches, dy, grads, start):
        import paddle

        layer = paddle.jit.to_static(bn.bn, full_graph=True)
        facts = {}

        def step(x, want):
            layer.train()
            xt = bn._in(x, requires_grad=want)
            y = layer(xt)
            if not facts:
                facts["train_program_bn_op"] = _bn_op(layer.forward.concrete_program.main_program)
            if not want:
                return bn._out(y), None
            for p in layer.parameters():
                p.clear_gradient()
            (y * bn._in(dy)).sum().backward()
            return bn._out(y), self._grads(bn, xt, layer)

        def infer(x):
            layer.eval()
            y = layer(bn._in(x))
            facts["eval_program_bn_op"] = _bn_op(layer.forward.concrete_program.main_program)
            # a backward through the eval-mode program, as a fine-tuning step on an eval() model would take
            for p in layer.parameters():
                p.clear_gradient()
            y_grad = layer(bn._in(x, requires_grad=True))
            facts["eval_mode_output_stop_gradient"] = str(y_grad.stop_gradient)
            if not y_grad.stop_gradient:
                (y_grad * bn._in(dy)).sum().backward()
            facts["eval_mode_param_grads"] = "none" if layer.weight.grad is None else "yes"
            return bn._out(y)

        out = self._run_steps(bn, step, infer, bn.get_state, batches, grads, start)
        out.facts.update(facts)
        return out

    def _static(self, bn, spec, batches, dy, grads, start):
        import paddle

        from bnsuite.adapters.paddle_bn import default_dtype

        names = {"name": "bnsuite_bn", "weight_attr": paddle.ParamAttr(name="bnsuite_bn_w"),
                 "bias_attr": paddle.ParamAttr(name="bnsuite_bn_b")}
        loaded = bn.get_state()
        shape = list(batches[0].shape)
        with _static_mode(paddle), paddle.static.scope_guard(paddle.static.Scope()):
            main, startup, test = paddle.static.Program(), paddle.static.Program(), paddle.static.Program()
            with default_dtype(paddle, spec.dtype):
                with paddle.static.program_guard(main, startup):
                    x = paddle.static.data("x", shape, spec.dtype)
                    x.stop_gradient = False
                    d = paddle.static.data("dy", shape, spec.dtype)
                    train_bn = bn._build(**names)
                    y = train_bn(x)
                    fetch = [y, *paddle.static.gradients([(y * d).sum()], [x, train_bn.weight, train_bn.bias])]
                with paddle.static.program_guard(test, paddle.static.Program()):
                    test_bn = bn._build(**names)
                    test_bn.eval()
                    y_test = test_bn(paddle.static.data("x", shape, spec.dtype))
            exe = paddle.static.Executor(paddle.CPUPlace())
            exe.run(startup)
            scope = paddle.static.global_scope()
            slots = {"scale": train_bn.weight.name, "offset": train_bn.bias.name, "mean": train_bn._mean.name,
                     "var": train_bn._variance.name}
            for field, name in slots.items():
                value = np.asarray(getattr(loaded, field), np.float64).astype(spec.dtype)
                scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
            read = lambda: State(**{f: np.array(scope.find_var(n).get_tensor()).astype(np.float64)
                                    for f, n in slots.items()})

            def step(xb, want):
                out = exe.run(main, feed={"x": xb.astype(spec.dtype), "dy": dy.astype(spec.dtype)}, fetch_list=fetch)
                f64 = [np.asarray(o, np.float64) for o in out]
                return f64[0], (Grads(*f64[1:]) if want else None)

            infer = lambda xb: exe.run(test, feed={"x": xb.astype(spec.dtype)}, fetch_list=[y_test])[0]
            # the program's own statistics live in the scope: they are the layer's state on this path
            own = type("ScopeState", (), {"get_state": staticmethod(read)})
            out = self._run_steps(own, step, infer, read, batches, grads, start)
            out.facts.update(train_program_bn_op=_bn_op(main), eval_program_bn_op=_bn_op(test))
        return out

    def freeze(self, path, idiom, spec, state, x, dy, lr):
        import paddle

        if path != "paddle.jit.to_static":
            raise NotImplementedError(f"{type(self).__name__}: no freeze idioms under {path}")
        bn = self._layer(spec, state)
        paddle.jit.to_static(bn.bn, full_graph=True)
        y = bn.frozen_step(idiom, x, dy, lr)
        return y, bn.get_state()


@contextlib.contextmanager
def _static_mode(paddle):
    """paddle.enable_static() for the block, dynamic mode again afterwards (the adapter's and every other case's)."""
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()
