"""A pytest plugin for benchmarks only (never loaded by the suites): how much of a group's CPU goes to importing the
frameworks and to their compilers, measured through the frameworks' own entry points.

    BNSUITE_COMPILE_CLOCK=out.jsonl python -m pytest -p benchmarks.compile_clock ...

Each pytest process (a nested one too, such as the meta group's broken-adapter run) appends one JSON line at exit:
its own CPU seconds (user + system, with its waited-for children such as clang and the C++ compiler) and, within
them:
- import: the outermost import of each framework, exporter or runtime package (IMPORTED) or of one of their modules,
  with what it imports;
- jax: tracing, lowering and XLA compilation of each new program (the wall seconds that JAX's own
  /jax/core/compile/* events cover, nested ones once);
- tinygrad: codegen and clang for each new kernel (tinygrad.codegen.do_to_program);
- torch: dynamo with its backend (Inductor's C++ compiler included), and torch.export's tracing (which the exporters,
  pt2e quantization and LiteRT conversion go through);
- tensorflow: tracing a tf.function into a graph (Keras' train, predict and test steps among them); building TF1
  graphs and Grappler's optimization at a graph's first run are not clocked (they count as the rest).
Where one region runs inside another (an import inside a compile) only the outermost counts. What the categories
leave out (the rest) is the cases themselves: framework calls, our checks, the oracle, pytest.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import json
import os
import sys

IMPORTED = ("torch", "tensorflow", "tf_keras", "keras", "jax", "flax", "optax", "paddle", "tinygrad", "mlx", "onnx",
            "onnxruntime", "openvino", "ai_edge_litert", "litert_torch", "torchvision", "tensorflow_probability")
JAX_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")
_OUT = os.environ.get("BNSUITE_COMPILE_CLOCK")
_SPENT = {"import": 0.0, "jax": 0.0, "tinygrad": 0.0, "torch": 0.0, "tensorflow": 0.0}
_DEPTH = [0]
_JAX_SPANS: list[tuple[float, float]] = []


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _clocked(kind: str, fn):
    """fn, with its CPU seconds added to kind when no other clocked region is running."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        outer = _DEPTH[0] == 0
        _DEPTH[0] += 1
        t0 = _cpu() if outer else 0.0
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
            if outer:
                _SPENT[kind] += _cpu() - t0
    return run


def _on_jax_span(event: str, start: float, end: float, **_kw) -> None:
    if event in JAX_EVENTS and _DEPTH[0] == 0:
        _JAX_SPANS.append((start, end))


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the spans: tracing a jitted function that calls another traces both, nested in time."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _patch(name: str, module) -> None:
    """The compilers' entry points, as each module is loaded."""
    if name == "jax._src.monitoring":
        module.register_event_time_span_listener(_on_jax_span)
    elif name == "tinygrad.codegen":
        module.do_to_program = _clocked("tinygrad", module.do_to_program)
    elif name == "torch._dynamo.convert_frame":
        module._compile = _clocked("torch", module._compile)
    elif name == "torch.export":
        module.export = _clocked("torch", module.export)
    elif name == _TF_TRACING:
        module._create_concrete_function = _clocked("tensorflow", module._create_concrete_function)


_TF_TRACING = "tensorflow.python.eager.polymorphic_function.tracing_compilation"
_WATCHED = ("jax._src.monitoring", "tinygrad.codegen", "torch._dynamo.convert_frame", "torch.export", _TF_TRACING)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, name):
        self.inner, self.name = inner, name

    def create_module(self, spec):
        if self.name.partition(".")[0] in IMPORTED:  # an extension module (mlx.core) initializes here
            return _clocked("import", self.inner.create_module)(spec)
        return self.inner.create_module(spec)

    def exec_module(self, module):
        if self.name.partition(".")[0] in IMPORTED:  # a submodule too: mlx.core is an extension in a namespace package
            _clocked("import", self.inner.exec_module)(module)
        else:
            self.inner.exec_module(module)
        if self.name in _WATCHED:
            _patch(self.name, module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] not in IMPORTED and name not in _WATCHED:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, name)
        return spec


def _write() -> None:
    _SPENT["jax"] += _union(_JAX_SPANS)
    with open(_OUT, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:6], "cpu": round(_cpu(), 2),
                             **{k: round(v, 2) for k, v in _SPENT.items()}}) + "\n")


if _OUT and not any(isinstance(f, _Finder) for f in sys.meta_path):
    for _name in [*IMPORTED, *_WATCHED]:
        if _name in sys.modules:
            raise RuntimeError(f"compile_clock: {_name} was imported before the plugin; load it with -p first")
    sys.meta_path.insert(0, _Finder())
    atexit.register(_write)
