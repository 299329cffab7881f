"""MindSpore's graph compiler: mindspore.jit around the mindspore adapter's cell (the cell itself, and a function that
calls it; AST and bytecode capture; jit_level O0 and O1), and the whole run in GRAPH_MODE
(mindspore.set_context(mode=GRAPH_MODE), every cell call compiled). Gradients through mindspore.value_and_grad over
the compiled call. Each path runs the mindspore adapter's layer and cases.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

from bnsuite.adapters.base import Cited, Grads
from bnsuite.lanes.compile import CompileLane, PathFacts

_API = "mindspore/graph/api.py"
_JIT = (f"{_API}: jit(function, *, capture_mode='ast', jit_level='O0', ...): 'ast: Parse Python ast to build graph', "
        "'bytecode: Parse Python bytecode to build graph at runtime'")
_CELL_KEY = (f"{_API}: _jit_ast wraps a Cell's construct bound to the cell; _JitExecutor.compile keys the compiled "
             "graph on the cell's phase (generate_name + self.obj.phase), which mindspore/nn/cell.py: Cell.set_train "
             "sets to 'train' or 'predict': set_train(False) after a training call compiles a second graph")
_FN_KEY = (f"{_API}: _jit_ast over a plain function has no cell (process_obj None): the compiled graph is keyed on the "
           "function and its arguments only, and the cell's `training` flag is read as a constant while the graph "
           "is built, so set_train(False) after the first call reuses the training graph")
_BN = ("mindspore/nn/layer/normalization.py: _BatchNorm.construct branches on self.training (bn_train updates "
       "moving_mean/moving_variance through the BatchNorm primitive's in-place side effect, bn_infer reads them)")
_GRAPH = ("mindspore/context.py: set_context(mode=GRAPH_MODE): every Cell call is compiled (mindspore/nn/cell.py: "
          "Cell.__call__ -> compile_and_run with phase=self.phase), and mindspore.value_and_grad compiles the loss "
          "and its backward; the mode is restored to PYNATIVE_MODE after the path")
_GRADS = ("mindspore/ops/function/grad/grad_func.py: value_and_grad(loss, grad_position=0, weights=cell."
          "trainable_params(), has_aux=True) over a loss that calls the compiled cell: the graph's backward")
_BITWISE = "the same CPU BatchNorm kernels as PyNative on the same float32 values: observed bitwise on mindspore 2.10.0"
_MOVES = ("the eval call runs the cached training graph: batch statistics, and the running statistics move again "
          "(observed on mindspore 2.10.0; finding mindspore_jit_function_bakes_cell_training_mode)")

_FOLLOWS = {"eval_call_moves_running_stats": "no"}
# the AST capture's compiled graphs (mindspore/graph/api.py: ms_compile_cache, one phase per compiled graph)
_AST_FOLLOWS = {**_FOLLOWS, "eval_call_compiles_ast_graph": "yes"}
_BAKED = {"eval_call_moves_running_stats": "yes", "eval_call_compiles_ast_graph": "no"}

PATHS = {
    "mindspore.jit-cell-ast": Cited(PathFacts(
        "mindspore.jit(bn) (capture_mode='ast', jit_level='O0'); bn.set_train(True/False) on the cell",
        agreement="bitwise", cumulative="n/a", facts=_AST_FOLLOWS),
        f"{_JIT}; {_CELL_KEY}; {_BN}; {_GRADS}; {_BITWISE}"),
    "mindspore.jit-cell-ast-O1": Cited(PathFacts(
        "mindspore.jit(bn, jit_level='O1') (operator fusion); bn.set_train(True/False) on the cell",
        agreement="bitwise", cumulative="n/a", facts=_AST_FOLLOWS),
        f"{_JIT}; jit_level 'O1: Using commonly used optimizations and automatic operator fusion optimizations'; "
        f"{_CELL_KEY}; {_BN}; {_GRADS}; {_BITWISE}"),
    "mindspore.jit-cell-bytecode": Cited(PathFacts(
        "mindspore.jit(bn, capture_mode='bytecode'); bn.set_train(True/False) on the cell",
        agreement="bitwise", cumulative="n/a", facts=_FOLLOWS),
        f"{_JIT}; {_API}: capture_mode 'bytecode' -> mindspore/common/_pijit_context.py: PIJitCaptureContext; "
        f"set_train(False) is followed (observed); {_BN}; {_GRADS}; {_BITWISE}"),
    "mindspore.jit-function-ast": Cited(PathFacts(
        "@mindspore.jit def call(x): return bn(x) (capture_mode='ast'); bn.set_train(True/False) on the cell",
        eval_switch="batch", agreement="bitwise", cumulative="n/a", facts=_BAKED),
        f"{_JIT}; {_FN_KEY}; {_BN}; {_MOVES}; {_GRADS}; {_BITWISE}"),
    "mindspore.jit-function-bytecode": Cited(PathFacts(
        "@mindspore.jit(capture_mode='bytecode') def call(x): return bn(x), bn a closure variable; "
        "bn.set_train(True/False) on the cell",
        agreement="bitwise", cumulative="n/a", facts=_FOLLOWS),
        f"{_JIT}; mindspore/graph/_utils/pijit_context.py: PIJitCaptureContext captures the function's bytecode; "
        "with the cell a closure variable set_train(False) after the training calls is followed and the running "
        f"statistics stay (observed on mindspore 2.10.0, unlike the AST capture of the same function); {_BN}; "
        f"{_GRADS}; {_BITWISE}"),
    "mindspore.GRAPH_MODE": Cited(PathFacts(
        "mindspore.set_context(mode=GRAPH_MODE) around the run; bn(x) and value_and_grad compiled; freeze idioms: the "
        "adapter's SGD step (value_and_grad, nn.SGD) run whole in GRAPH_MODE",
        agreement="bitwise", cumulative="n/a", facts=_FOLLOWS,
        freeze=("train", "eval", "requires_grad_false", "eval_requires_grad_false", "use_batch_statistics_false")),
        f"{_GRAPH}; {_CELL_KEY.split(': _JitExecutor')[0]}; the graph is keyed on the cell's phase, so "
        f"set_train(False) compiles the inference graph; {_BN}; {_GRADS}; {_BITWISE}; the freeze idioms are the adapter's "
        "frozen_step (mindspore_bn.py: value_and_grad over the cell, nn.SGD on trainable_params) under GRAPH_MODE, "
        "observed bitwise to the same step in PyNative"),
}


@contextlib.contextmanager
def _graph_run(ms, graph_mode: bool):
    """The path's compilations in a temporary working directory (a failed compilation writes rank_0/om/
    analyze_fail.ir into the current directory, and neither save_graphs_path nor MS_DEV_SAVE_GRAPHS_PATH moves it:
    observed on mindspore 2.10.0); GRAPH_MODE for the block where asked, the process's mode again afterwards."""
    mode, cwd = ms.get_context("mode"), os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bnsuite-ms-graph-") as tmp:
        os.chdir(tmp)
        try:
            if graph_mode:
                ms.set_context(mode=ms.GRAPH_MODE)
            yield
        finally:
            ms.set_context(mode=mode)
            os.chdir(cwd)


class MindsporeCompile(CompileLane):
    """The mindspore.jit and GRAPH_MODE paths over a fresh mindspore adapter layer each."""

    framework = "mindspore"

    def run(self, path, spec, state, batches, dy, grads=True):
        start, bn = time.perf_counter(), self._layer(spec, state)
        with _graph_run(bn.ms, path == "mindspore.GRAPH_MODE"):
            return self._compiled(bn, path, batches, dy, grads, start)

    @staticmethod
    def _call(ms, cell, path):
        """The compiled call of `path` over `cell`."""
        capture = "bytecode" if path.endswith("bytecode") else "ast"
        if path == "mindspore.GRAPH_MODE":
            return cell
        if path.startswith("mindspore.jit-cell"):
            return ms.jit(cell, capture_mode=capture, jit_level="O1" if path.endswith("O1") else "O0")
        if not path.startswith("mindspore.jit-function"):
            raise KeyError(path)

        def call(x):
            return cell(x)

        return ms.jit(call, capture_mode=capture)

    def _compiled(self, bn, path, batches, dy, grads, start):
        from mindspore.graph.api import ms_compile_cache

        from bnsuite.adapters.mindspore_bn import ms_numpy

        ms, cell = bn.ms, bn.core
        call = self._call(ms, cell, path)
        dyt = bn._in(dy)
        facts = {}

        def loss(xt):
            y = call(xt)
            return (y * dyt).sum(), y

        def step(x, want):
            cell.set_train(True)
            if not want:
                return bn._out(call(bn._in(x))), None
            weights = cell.trainable_params()
            (_, y), (gx, gw) = ms.value_and_grad(loss, grad_position=0, weights=weights, has_aux=True)(bn._in(x))
            by_name = dict(zip([p.name for p in weights], gw))
            g = lambda p: None if p.name not in by_name else ms_numpy(ms, by_name[p.name])
            return bn._out(y), Grads(bn._out(gx), g(cell.gamma), g(cell.beta))

        def infer(x):
            before, graphs = bn.get_state(), len(ms_compile_cache)
            cell.set_train(False)
            y = bn._out(call(bn._in(x)))
            after = bn.get_state()
            if not path.endswith(("bytecode", "GRAPH_MODE")):  # the AST capture's cache; the others keep their own
                facts["eval_call_compiles_ast_graph"] = "yes" if len(ms_compile_cache) > graphs else "no"
            facts["eval_call_moves_running_stats"] = "yes" if any(
                (getattr(before, f) != getattr(after, f)).any() for f in ("mean", "var")) else "no"
            return y

        run = self._run_steps(bn, step, infer, bn.get_state, batches, grads, start)
        run.facts = {**run.facts, **facts}
        return run

    def freeze(self, path, idiom, spec, state, x, dy, lr):
        """The adapter's own SGD step (value_and_grad and nn.SGD) with every call compiled: GRAPH_MODE only."""
        if not PATHS[path].value.freeze:
            raise NotImplementedError(f"{type(self).__name__}: no freeze idioms under {path}")
        bn = self._layer(spec, state)
        with _graph_run(bn.ms, graph_mode=True):
            return bn.frozen_step(idiom, x, dy, lr), bn.get_state()

    @classmethod
    def declare(cls):
        return PATHS  # the paths above, in the report's order
