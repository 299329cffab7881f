"""A pytest plugin for benchmarks only (never loaded by the suites): how much of a group's CPU goes to importing the
frameworks and to their compilers, measured through the frameworks' own entry points.

    BNSUITE_COMPILE_CLOCK=out.jsonl python -m pytest -p benchmarks.compile_clock ...

Each pytest process (a nested one too, such as the meta group's broken-adapter run) appends one JSON line at exit:
its own CPU seconds (user + system, with its waited-for children such as clang and the C++ compiler) and, within
them:
- import: the outermost import of each framework, exporter or runtime package (IMPORTED) or of one of their modules,
  with what it imports;
- jax: tracing, lowering and XLA compilation of each new program (from the start to the end of JAX's own
  /jax/core/compile/* events);
- tinygrad: codegen and clang for each new kernel (tinygrad.codegen.do_to_program);
- torch: dynamo with its backend (Inductor's C++ compiler included), Inductor's compile of a backward graph (at the
  first backward()), and torch.export's tracing (which the exporters, pt2e quantization and LiteRT conversion go
  through);
- tensorflow: tracing a tf.function into a graph (Keras' train, predict and test steps among them); building TF1
  graphs and Grappler's optimization at a graph's first run are not clocked (they count as the rest).
Where one region runs inside another (an import inside a compile) only the outermost counts. What the categories
leave out (the rest) is the cases themselves: framework calls, our checks, the oracle, pytest; and every process that
writes no line: one that is not pytest (a reproduction's fork server, a replica worker, a subprocess probe) and a
pytest attempt ended by the plugin's watchdog or the group's timeout. So the clocked parts are a lower bound.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
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
_JAX_OPEN: list[float | None] = []  # per open JAX compile event: the CPU clock at its start, where outermost
_HOOKED: list[str] = []


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


def _on_jax_start(event: str, _value: float, **_kw) -> None:
    """JAX's compile events start with a scalar (their start time) and end with a time span: a region like the others,
    clocked in CPU seconds (XLA's compiler threads included), nested ones once."""
    if event in JAX_EVENTS:
        _JAX_OPEN.append(_cpu() if _DEPTH[0] == 0 else None)
        _DEPTH[0] += 1


def _on_jax_end(event: str, _start: float, _end: float, **_kw) -> None:
    if event in JAX_EVENTS and _JAX_OPEN:
        _DEPTH[0] -= 1
        t0 = _JAX_OPEN.pop()
        if t0 is not None:
            _SPENT["jax"] += _cpu() - t0


def _hook(module, attr: str, kind: str) -> None:
    if callable(getattr(module, attr, None)):
        setattr(module, attr, _clocked(kind, getattr(module, attr)))
        _HOOKED.append(f"{module.__name__}.{attr}")


def _patch(name: str, module) -> None:
    """The compilers' entry points, as each module is loaded. An entry point a release renamed is left alone (the
    JSON line lists what was hooked)."""
    if name == "jax._src.monitoring":
        if hasattr(module, "register_scalar_listener") and hasattr(module, "register_event_time_span_listener"):
            module.register_scalar_listener(_on_jax_start)
            module.register_event_time_span_listener(_on_jax_end)
            _HOOKED.append("jax compile events")
    elif name == "tinygrad.codegen":
        _hook(module, "do_to_program", "tinygrad")
    elif name == "torch._dynamo.convert_frame":
        _hook(module, "_compile", "torch")
    elif name == "torch._inductor.compile_fx":
        _hook(module, "_compile_fx_inner", "torch")  # the backward graph, compiled at the first backward()
    elif name == "torch.export":
        _hook(module, "export", "torch")
    elif name == _TF_TRACING:
        _hook(module, "_create_concrete_function", "tensorflow")


_TF_TRACING = "tensorflow.python.eager.polymorphic_function.tracing_compilation"
_WATCHED = ("jax._src.monitoring", "tinygrad.codegen", "torch._dynamo.convert_frame", "torch._inductor.compile_fx",
            "torch.export", _TF_TRACING)


def _framework(name: str) -> bool:
    """A module of a framework whose import is clocked."""
    return name.partition(".")[0] in IMPORTED


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, name):
        self.inner, self.name = inner, name
        self.framework = _framework(name)  # a submodule too: mlx.core is an extension in a namespace package

    def __getattr__(self, attr):  # get_data, get_resource_reader, is_package ...: the real loader's
        return getattr(self.inner, attr)

    def create_module(self, spec):
        if self.framework:  # an extension module (mlx.core) initializes here
            return _clocked("import", self.inner.create_module)(spec)
        return self.inner.create_module(spec)

    def exec_module(self, module):
        if self.framework:
            _clocked("import", self.inner.exec_module)(module)
        else:
            self.inner.exec_module(module)
        if self.name in _WATCHED:
            _patch(self.name, module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if not (_framework(name) or name in _WATCHED) or name in sys.modules:
            return None  # not ours, or a reload: the other finders' as usual
        finders = sys.meta_path[sys.meta_path.index(self) + 1:] if self in sys.meta_path else []
        for finder in finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, name)
                return spec
        return None


def _write() -> None:
    with open(_OUT, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:6], "cpu": round(_cpu(), 2),
                             **{k: round(v, 2) for k, v in _SPENT.items()}, "hooked": _HOOKED,
                             "open_at_exit": _DEPTH[0]}) + "\n")  # regions still open: their CPU is not counted


if _OUT and not any(isinstance(f, _Finder) for f in sys.meta_path):
    for _name in [*IMPORTED, *_WATCHED]:
        if _name in sys.modules:
            raise RuntimeError(f"compile_clock: {_name} was imported before the plugin; load it with -p first")
    sys.meta_path.insert(0, _Finder())
    atexit.register(_write)
