"""The compiled and transformed lane (suites/test_compiled.py): broken lanes run the real torch.compile (aot_eager)
and differ from their declaration in one way each. Each broken adapter is the correct torch BatchNorm whose "compile"
capability is such a lane; they declare one path only, so the meta run compiles little."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Cited, Grads, State
from bnsuite.adapters.mindspore_bn import MindsporeBatchNorm
from bnsuite.adapters.mlx_bn import MlxBatchNorm
from bnsuite.adapters.torch_bn import TorchBatchNorm
from bnsuite.lanes.compile.mindspore_compile import MindsporeCompile
from bnsuite.lanes.compile.mlx_compile import MlxCompile
from bnsuite.lanes.compile.torch_compile import TorchCompile
from meta_tests.broken.base import ref, torch_with, wrong

PATH = "compile-aot_eager"


def _one_path(**changes) -> dict:
    real = TorchCompile.declare()[PATH]
    return {PATH: Cited(dataclasses.replace(real.value, **changes), "broken: " + real.source[:80])}


class DropsUpdateLane(TorchCompile):
    """torch.compile(backend="aot_eager") whose compiled call silently drops the running-statistics update (the
    buffers, step counter included, are put back after every call) while declaring them updated."""

    @classmethod
    def declare(cls):
        return _one_path(freeze=("no_grad",))

    def _runner(self, path, bn, x):
        runner = super()._runner(path, bn, x)
        compiled_call, torch = runner.call, bn.torch

        def dropping(xt):
            saved = {k: b.detach().clone() for k, b in bn.module.named_buffers()}
            y = compiled_call(xt)
            with torch.no_grad():
                for k, b in bn.module.named_buffers():
                    b.copy_(saved[k])
            return y

        runner.call = dropping
        return runner


class SkewedLane(TorchCompile):
    """torch.compile(backend="aot_eager") whose outputs are off by 1e-3, gradients by a factor 1.001 and parameters
    after a frozen step by 1e-3, declaring a fact, the gradients and momentum=None wrongly."""

    @classmethod
    def declare(cls):
        return {PATH: wrong(dataclasses.replace(TorchCompile.declare()[PATH].value, freeze=("eval",),
                                                grads="error:RuntimeError", cumulative="error:UserError",
                                                facts={"compiled": "no (ran eagerly)"}))}

    def _runner(self, path, bn, x):
        runner = super()._runner(path, bn, x)
        compiled_call = runner.call
        runner.call = lambda xt: compiled_call(xt) + 1e-3
        return runner

    def run(self, *args, **kwargs):
        out = super().run(*args, **kwargs)
        g = out.grads
        if g is not None:
            out.grads = Grads(g.dx * 1.001, g.dscale * 1.001, g.doffset * 1.001)
        return out

    def freeze(self, *args, **kwargs):
        y, st = super().freeze(*args, **kwargs)
        return y, State(st.scale + 1e-3, st.offset + 1e-3, st.mean, st.var)


class PerStepLane(TorchCompile):
    """torch.compile(backend="aot_eager") whose every training call starts again from the loaded running statistics
    (each step updates its own copy, as a scan with the statistics on a scanned axis does) while declaring them
    updated in sequence."""

    @classmethod
    def declare(cls):
        return _one_path()

    def _runner(self, path, bn, x):
        runner = super()._runner(path, bn, x)
        compiled_call, torch = runner.call, bn.torch
        loaded = {k: b.detach().clone() for k, b in bn.module.named_buffers()}

        def from_loaded(xt):
            if bn.module.training:
                with torch.no_grad():
                    for k, b in bn.module.named_buffers():
                        b.copy_(loaded[k])
            return compiled_call(xt)

        runner.call = from_loaded
        return runner


class DeclaresPerStepLane(TorchCompile):
    """The real torch.compile(backend="aot_eager"), which updates the statistics in sequence, declared per-step."""

    @classmethod
    def declare(cls):
        return {PATH: wrong(dataclasses.replace(TorchCompile.declare()[PATH].value, running_stats="per-step"))}


class DeclaresFirstTwoLane(TorchCompile):
    """The real torch.compile(backend="aot_eager"), which updates the statistics on every call, declared to move them
    on its first two calls only (as a jit whose replays leave out the update)."""

    @classmethod
    def declare(cls):
        return {PATH: wrong(dataclasses.replace(TorchCompile.declare()[PATH].value, running_stats="first-2"))}


class CompileDropsUpdate(TorchBatchNorm):
    """A correct torch BatchNorm whose compiled path drops the running-statistics update."""

    id = "broken-compile-drops-update"
    capabilities = {**TorchBatchNorm.capabilities, "compile": ref(DropsUpdateLane)}


class CompileSkewed(TorchBatchNorm):
    """A correct torch BatchNorm whose compiled path is numerically off and declares wrong facts."""

    id = "broken-compile-skewed"
    capabilities = {**TorchBatchNorm.capabilities, "compile": ref(SkewedLane)}


CompilePerStep = torch_with("CompilePerStep", "broken-compile-per-step", compile=PerStepLane)
CompileDeclaresPerStep = torch_with("CompileDeclaresPerStep", "broken-compile-declares-per-step",
                                    compile=DeclaresPerStepLane)

CompileDeclaresFirstTwo = torch_with("CompileDeclaresFirstTwo", "broken-compile-declares-first-two",
                                     compile=DeclaresFirstTwoLane)


class MlxEvalSwitchLane(MlxCompile):
    """The real mx.compile with the module's state captured, declared as a user expects it: bn.eval() after the
    first compiled call normalizes with the running statistics and leaves them alone."""

    @classmethod
    def declare(cls):
        real = MlxCompile.declare()["mx.compile-state-captured"].value
        return {"mx.compile-state-captured": wrong(dataclasses.replace(
            real, eval_switch="running", freeze=(), facts={"eval_call_moves_running_stats": "no",
                                                       "eval_call_compiles_ast_graph": "yes"}))}


class MlxCompileDeclaresEvalSwitch(MlxBatchNorm):
    """The correct mlx BatchNorm whose compiled path is declared to follow bn.eval()."""

    id = "broken-mlx-compile-declares-eval-switch"
    capabilities = {**MlxBatchNorm.capabilities, "compile": ref(MlxEvalSwitchLane)}


def _mindspore_declaring(name: str, path: str, doc: str, eval_switch: str, moves: str, compiles: str) -> type:
    """The real mindspore lane with `path` alone, declared with the other eval switch and its path facts."""
    real = dataclasses.replace(MindsporeCompile.declare()[path].value, eval_switch=eval_switch, facts={
        "eval_call_moves_running_stats": moves, "eval_call_compiles_ast_graph": compiles})
    return type(name, (MindsporeCompile,), {"__doc__": doc, "__module__": __name__, "__qualname__": name,
                                            "declare": classmethod(lambda cls: {path: wrong(real)})})


MindsporeFunctionFollowsLane = _mindspore_declaring(
    "MindsporeFunctionFollowsLane", "mindspore.jit-function-ast",
    "The real mindspore.jit over a function calling the cell (AST capture), declared as a user expects it: "
    "set_train(False) after the first call normalizes with the running statistics and leaves them alone.",
    "running", "no", "yes")
MindsporeCellBakedLane = _mindspore_declaring(
    "MindsporeCellBakedLane", "mindspore.jit-cell-ast",
    "The real mindspore.jit over the cell itself, declared to keep the training mode of its first call as the "
    "jitted function does.", "batch", "yes", "no")

# the correct mindspore BatchNorm, its compiled path declared to follow set_train(False) / to ignore it
MindsporeJitFunctionDeclaresFollows = torch_with("MindsporeJitFunctionDeclaresFollows",
                                                 "broken-mindspore-jit-function-declares-follows",
                                                 base=MindsporeBatchNorm, compile=MindsporeFunctionFollowsLane)
MindsporeJitCellDeclaresBaked = torch_with("MindsporeJitCellDeclaresBaked", "broken-mindspore-jit-cell-declares-baked",
                                           base=MindsporeBatchNorm, compile=MindsporeCellBakedLane)


_EVAL_SWITCH = {"compiled_eval_switch", "compiled_eval_output_vs_eager", "compiled_eval_output_vs_oracle",
                "compiled_path_fact"}

EXPECTED_FAILURES = {
    CompileDropsUpdate: {"compiled_running_stats_update", "compiled_running_mean_vs_eager",
                         "compiled_running_mean_vs_oracle", "compiled_running_var_vs_eager",
                         "compiled_running_var_vs_oracle", "compiled_cumulative_running_mean_vs_eager",
                         "compiled_cumulative_running_mean_vs_oracle", "compiled_cumulative_running_var_vs_eager",
                         "compiled_cumulative_running_var_vs_oracle", "compiled_steps_tracked",
                         "compiled_eval_output_vs_eager", "compiled_freeze_running_stats_vs_eager"},
    CompileSkewed: {"compiled_train_output_vs_eager", "compiled_train_output_vs_oracle", "compiled_eval_switch",
                    "compiled_eval_output_vs_eager", "compiled_eval_output_vs_oracle",
                    "compiled_grads", "compiled_dx_vs_eager", "compiled_dx_vs_oracle", "compiled_dscale_vs_eager",
                    "compiled_dscale_vs_oracle", "compiled_doffset_vs_eager", "compiled_doffset_vs_oracle",
                    "compiled_cumulative_runs", "compiled_path_fact", "compiled_freeze_output_vs_eager",
                    "compiled_freeze_params_vs_eager"},
    CompilePerStep: {"compiled_running_stats_update", "compiled_running_mean_vs_eager", "compiled_running_mean_vs_oracle",
                     "compiled_running_var_vs_eager", "compiled_running_var_vs_oracle", "compiled_eval_output_vs_eager"},
    CompileDeclaresFirstTwo: {"compiled_running_stats_update", "compiled_running_mean_vs_eager",
                              "compiled_running_mean_vs_oracle", "compiled_running_var_vs_eager",
                              "compiled_running_var_vs_oracle", "compiled_eval_output_vs_eager"},
    MlxCompileDeclaresEvalSwitch: _EVAL_SWITCH,
    MindsporeJitFunctionDeclaresFollows: _EVAL_SWITCH,
    MindsporeJitCellDeclaresBaked: _EVAL_SWITCH,
    CompileDeclaresPerStep: {"compiled_running_stats_update", "compiled_running_mean_vs_eager",
                             "compiled_running_mean_vs_oracle", "compiled_running_var_vs_eager",
                             "compiled_running_var_vs_oracle", "compiled_eval_output_vs_eager"},
}
