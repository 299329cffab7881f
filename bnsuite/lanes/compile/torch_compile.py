"""torch's compiled and transformed paths: torch.compile (aot_eager and inductor backends), torch.export,
torch.func (functional_call, vmap, grad, jacrev) and the channels_last memory format, each declared with its source.

Inductor compiles C++ on the CPU (seconds per graph): its on-disk caches live in .cache/torchinductor of a checkout
(env TORCHINDUCTOR_CACHE_DIR moves them), so a second run reuses the compiled kernels, and each path is compiled once
per run (suites/compiled_runs.py keeps the run).
"""

from __future__ import annotations

import os
import shutil
import time

from bnsuite.adapters.base import Cited, State
from bnsuite.lanes.compile import CompileLane, PathFacts, PathRun, error_name
from bnsuite.lanes.compile import torch_paths as tp

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CACHE = os.path.join(_CHECKOUT, ".cache", "torchinductor")


def use_checkout_cache() -> None:
    """Point Inductor's on-disk caches at CACHE unless the user chose a folder. `import torch._dynamo` (which Keras'
    torch backend and torch.func import) already wrote torch's default (a temporary folder) into the environment, so
    that value counts as unset; Inductor reads the variable at each cache access."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = CACHE

_BN = "torch/nn/modules/batchnorm.py"
_DYNAMO = ("torch/_dynamo/variables/nn_module.py: the module's forward is traced with its buffers as graph inputs; "
           "torch/_functorch/_aot_autograd/input_output_analysis.py + runtime_wrappers.py: functionalized buffer "
           "mutations (running_mean.copy_ ...) are applied back to the real buffers after each call; the training "
           "flag is guarded (torch/_dynamo/guards.py), so .eval() after the first call recompiles")
_INDUCTOR = ("torch/_inductor/decomposition.py + torch/_decomp/decompositions.py: native_batch_norm_helper computes "
             "var_mean in generated C++ (another reduction order than ATen's kernel), the running-statistics update "
             "as mean * momentum + running * (1 - momentum) with the unbiased variance (n / (n - 1))")
_AOT_EAGER = ("torch/_dynamo/backends/debugging.py: aot_eager runs AOTAutograd's functionalized graph with the "
              "eager ATen kernels (_native_batch_norm_legit_functional), so the numbers are eager's")
_EXPORT = ("torch/export/exported_program.py: ExportedProgram.module() replaces train()/eval() by functions raising "
           "NotImplementedError('Calling train() is not supported yet.'), the mode is the one at export "
           "(pytorch/pytorch#151726); _unlift.py: the unlifted module holds the state_dict tensors themselves; "
           "_trace.py: _ignore_backend_decomps calls torch.backends.cudnn.set_flags, which reads the legacy "
           "allow_tf32 getter, and that raises once TF32 is turned off through torch.backends.fp32_precision (the "
           "suite's numeric settings, adapters/numerics.py), even on a CPU (mir-group/nequip#609)")
_EXPORT_IR = ("torch/export/_trace.py: the default (training) IR keeps aten.batch_norm.default, whose in-place buffer "
              "update is not listed in graph_signature.buffers_to_mutate")
_DECOMP = ("torch/_decomp/decompositions.py: batch_norm -> _native_batch_norm_legit_functional in training "
           "(returns new running_mean/var, num_batches_tracked += 1 as an explicit add), "
           "_native_batch_norm_legit_no_training in eval; run_decompositions lists the returned buffers in "
           "buffers_to_mutate")
_FUNC_CALL = ("torch/nn/utils/stateless.py: functional_call swaps the passed tensors in as the module's buffers for "
              "the call, so the in-place update of F.batch_norm lands in the passed tensors; the module's own stay")
_VMAP = ("aten/src/ATen/functorch/BatchRulesNorm.cpp: batch_norm_batch_rule raises 'Batch norm got a batched tensor "
         "as input while the running_mean or running_var, which will be updated in place, were not batched'")
_REPLACE = ("torch/_functorch/batch_norm_replacement.py: replace_all_batch_norm_modules_ sets running_mean, "
            "running_var and num_batches_tracked to None and track_running_stats=False; "
            f"{_BN}: _BatchNorm.forward uses batch statistics when the running buffers are None, also in eval()")
_GRAD_CAPTURED = ("aten/src/ATen/functorch/DynamicLayer.cpp: a grad transform refuses an in-place op on a captured "
                  "tensor ('attempted to call in-place operation (aten::add_.Tensor) that would mutate a captured "
                  "Tensor'): num_batches_tracked.add_ in _BatchNorm.forward (pytorch/pytorch#85533)")
_CL = ("aten/src/ATen/native/cpu/batch_norm_kernel.cpp: batch_norm_cpu_collect_stats_channels_last_impl and "
       "batch_norm_cpu_transform_input_channels_last_impl reduce in another order than the contiguous kernels, so "
       "the results differ in the last bits (pytorch/pytorch#121651)")

_CUMULATIVE_FULLGRAPH = (f"{_BN}: _BatchNorm.forward, momentum=None sets exponential_average_factor = 1.0 / "
                         "float(self.num_batches_tracked), a Python float of a tensor value: dynamo cannot guard on "
                         "the data-dependent 1.0 / u0 and fullgraph=True raises UserError instead of breaking the "
                         "graph (pytorch/pytorch#194504)")
_CUMULATIVE_EXPORT = ("momentum=None: torch.export traces 1.0 / float(num_batches_tracked) on a data-dependent "
                      "value and raises GuardOnDataDependentSymNode (torch/fx/experimental/symbolic_shapes.py), the "
                      "same cause as pytorch/pytorch#194504")
# path -> (backend, fullgraph, dynamic): aot_eager as users first try it; Inductor with each switch on once (a third
# Inductor or a second aot_eager variant costs ~8 s of dynamo tracing per run on 2 cores and showed nothing new).
COMPILE_PATHS = {
    "compile-aot_eager": ("aot_eager", False, False),
    "compile-inductor-fullgraph": ("inductor", True, False),
    "compile-inductor-dynamic": ("inductor", False, True),
}
FREEZE_UNDER_COMPILE = ("eval", "requires_grad_false", "no_grad")
_EXPORTED_FACTS = {"module_shares_buffers": "yes", "export_with_tf32_off_by_new_api": "error:RuntimeError"}


def _compile_facts(backend: str, fullgraph: bool, dynamic: bool) -> Cited[PathFacts]:
    how = f"torch.compile(bn, backend={backend!r}, fullgraph={fullgraph}, dynamic={dynamic})"
    numbers = _AOT_EAGER if backend == "aot_eager" else _INDUCTOR
    source = f"{_DYNAMO}; {numbers}"
    if fullgraph:
        source += f"; {_CUMULATIVE_FULLGRAPH}"
    return Cited(PathFacts(how, agreement="bitwise" if backend == "aot_eager" else "rounding",
                           cumulative="error:UserError" if fullgraph else "yes",
                           freeze=FREEZE_UNDER_COMPILE if (backend, fullgraph) == ("aot_eager", False) else (),
                           facts={"compiled": "yes"}), source)


DECLARATION: dict[str, Cited[PathFacts]] = {
    **{name: _compile_facts(*opts) for name, opts in COMPILE_PATHS.items()},
    "export-train": Cited(PathFacts(
        "torch.export.export(bn.train(), (x,)).module()", eval_switch="error:NotImplementedError", agreement="bitwise",
        cumulative="error:GuardOnDataDependentSymNode", facts={**_EXPORTED_FACTS, "batch_norm_op": "aten.batch_norm.default", "buffers_to_mutate": "none"}),
        f"{_EXPORT}; {_EXPORT_IR}; {_CUMULATIVE_EXPORT}"),
    "export-train-run_decompositions": Cited(PathFacts(
        "torch.export.export(bn.train(), (x,)).run_decompositions().module()", eval_switch="error:NotImplementedError",
        grads="error:RuntimeError", agreement="bitwise", cumulative="error:GuardOnDataDependentSymNode",
        facts={**_EXPORTED_FACTS, "batch_norm_op": "aten._native_batch_norm_legit_functional.default",
               "buffers_to_mutate": "num_batches_tracked,running_mean,running_var"}),
        f"{_EXPORT}; {_DECOMP}; {_CUMULATIVE_EXPORT}; the unlifted module copies the new statistics into running_mean/var in place "
        "(aten.copy_) after the op, which saved them for its backward, so autograd's version check raises"),
    "export-eval": Cited(PathFacts(
        "torch.export.export(bn.eval(), (x,)).module()", train_normalizes="running", running_stats="dropped",
        eval_switch="error:NotImplementedError", agreement="bitwise", cumulative="n/a",
        facts={**_EXPORTED_FACTS, "batch_norm_op": "aten.batch_norm.default", "buffers_to_mutate": "none"}),
        f"{_EXPORT}; {_EXPORT_IR}: exported in eval mode the graph never takes the training branch"),
    "export-eval-run_decompositions": Cited(PathFacts(
        "torch.export.export(bn.eval(), (x,)).run_decompositions().module()", train_normalizes="running",
        running_stats="dropped", eval_switch="error:NotImplementedError", agreement="bitwise", cumulative="n/a",
        facts={**_EXPORTED_FACTS, "batch_norm_op": "aten._native_batch_norm_legit_no_training.default",
               "buffers_to_mutate": "none"}),
        f"{_EXPORT}; {_DECOMP}; pytorch/executorch#19980 reports num_batches_tracked re-added to the mutations of an "
        "eval program by run_decompositions, which this plain module does not show"),
    "func-functional_call": Cited(PathFacts(
        "torch.func.functional_call(bn, {**params, **buffers}, (x,))", running_stats="passed", agreement="bitwise"),
        _FUNC_CALL),
    "func-vmap": Cited(PathFacts(
        "torch.func.vmap(bn)(x[None])", running_stats="error:RuntimeError", grads="error:RuntimeError",
        cumulative="n/a", facts={"steps_counted_by_refused_call": "1"}),
        f"{_VMAP}; {_BN}: _BatchNorm.forward adds 1 to num_batches_tracked before F.batch_norm raises"),
    "func-vmap-replace_all_batch_norm_modules_": Cited(PathFacts(
        "torch.func.replace_all_batch_norm_modules_(bn); torch.func.vmap(bn)(x[None])", running_stats="dropped",
        eval_switch="batch", agreement="rounding", cumulative="n/a", facts={"track_running_stats": "False"}),
        _REPLACE),
    "func-grad": Cited(PathFacts(
        "torch.func.grad(loss, argnums=(0, 1), has_aux=True)(params, x, buffers) over functional_call",
        running_stats="passed", agreement="bitwise"), f"{_FUNC_CALL}; torch/_functorch/eager_transforms.py: grad"),
    "func-grad-captured": Cited(PathFacts(
        "torch.func.grad(lambda x: (bn(x) * dy).sum())(x)", running_stats="error:RuntimeError",
        grads="error:RuntimeError", cumulative="n/a", facts={"steps_counted_by_refused_call": "0"}),
        f"{_GRAD_CAPTURED}; the refused op is that add_, so nothing is counted"),
    "func-jacrev": Cited(PathFacts(
        "torch.func.jacrev(f, argnums=(0, 1), has_aux=True)(params, x, buffers) over functional_call",
        running_stats="passed", agreement="rounding"),
        f"{_FUNC_CALL}; torch/_functorch/eager_transforms.py: jacrev evaluates the function once (vjp) and "
        "builds the Jacobian from vmapped vjps, so dx is a contraction in another order"),
    "channels_last": Cited(PathFacts(
        "bn(x.contiguous(memory_format=torch.channels_last))", agreement="rounding",
        facts={"output_memory_format": "channels_last"}), _CL),
}


def _compiler_reason() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return None if shutil.which(cxx) else f"Inductor needs a C++ compiler on the CPU: $CXX={cxx!r} is not found"
    if any(shutil.which(c) for c in ("g++", "clang++", "c++")):
        return None
    return "Inductor needs a C++ compiler on the CPU and none is on PATH (g++, clang++, c++; or set $CXX)"


class TorchCompile(CompileLane):
    framework = "torch"

    @classmethod
    def declare(cls):
        return DECLARATION

    @classmethod
    def unavailable_reason(cls, path):
        if "inductor" in path:
            return _compiler_reason()
        return None

    def _runner(self, path, bn, x):
        use_checkout_cache()
        if path in COMPILE_PATHS:
            return tp.Compiled(bn, *COMPILE_PATHS[path])
        if path.startswith("export-"):
            return tp.Exported(bn, x, "-train" in path, path.endswith("run_decompositions"))
        return {"func-functional_call": lambda: tp.FunctionalCall(bn),
                "func-vmap": lambda: tp.Vmapped(bn, replace=False),
                "func-vmap-replace_all_batch_norm_modules_": lambda: tp.Vmapped(bn, replace=True),
                "func-grad": lambda: tp.FuncGrad(bn, "grad", captured=False),
                "func-grad-captured": lambda: tp.FuncGrad(bn, "grad", captured=True),
                "func-jacrev": lambda: tp.FuncGrad(bn, "jacrev", captured=False),
                "channels_last": lambda: tp.ChannelsLast(bn)}[path]()

    def _layer(self, spec, state: State):
        bn = super()._layer(spec, state)
        bn.module.train(True)
        return bn

    def run(self, path, spec, state, batches, dy, grads=True):
        start = time.perf_counter()
        bn = self._layer(spec, state)
        out = PathRun(train_outputs=[], states=[])
        try:
            runner = self._runner(path, bn, batches[0])
        except Exception as e:  # the path refuses this layer (export traces it here): no call can run
            out.errors = {"train": error_name(e), "eval": error_name(e)}
            out.own_state, out.seconds = bn.get_state(), time.perf_counter() - start
            return out
        for i, x in enumerate(batches):
            want = grads and i == 0
            try:
                y, g = runner.step(x, dy, want)
            except Exception as e:  # the path refuses: that is what it declares or not
                if runner.phase != "grads":
                    out.errors["train"] = error_name(e)
                    break
                out.errors["grads"] = error_name(e)  # the call ran (and moved the state); its backward raised
                y, g = runner.last_output, None
            out.train_outputs.append(y)
            out.states.append(runner.state())
            out.grads = out.grads or g
        out.own_state = runner.own_state()
        out.steps_tracked = runner.steps_tracked()
        try:
            out.eval_output = runner.infer(batches[-1])
        except Exception as e:
            out.errors["eval"] = error_name(e)
        out.facts = dict(runner.facts)
        if "train" in out.errors:  # what a refused call left behind
            out.facts["steps_counted_by_refused_call"] = str(out.steps_tracked)
        out.seconds = time.perf_counter() - start
        return out

    def freeze(self, path, idiom, spec, state, x, dy, lr):
        torch = self.adapter_cls(spec).torch
        bn = self._layer(spec, state)
        runner = self._runner(path, bn, x)
        m = bn.module
        grad_ctx = torch.enable_grad()
        if idiom == "eval":
            m.eval()
        elif idiom == "requires_grad_false":
            m.requires_grad_(False)
        elif idiom == "no_grad":
            grad_ctx = torch.no_grad()
        else:
            raise NotImplementedError(f"torch lane: freeze idiom {idiom!r} not run under the compiler")
        opt = torch.optim.SGD([m.weight, m.bias], lr=lr)
        opt.zero_grad(set_to_none=True)
        with grad_ctx:
            y = runner.call(bn._to_torch(x))
            loss = (y * bn._to_torch(dy)).sum()
        if loss.requires_grad:
            loss.backward()
        opt.step()
        return bn._from_torch(y), bn.get_state()
