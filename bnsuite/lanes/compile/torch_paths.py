"""The torch paths of the compiled and transformed lane: one runner per path, each over the torch adapter's module.

A runner holds a torch adapter (its module built from the spec, its state loaded) and runs the path: `step` is one
training-mode call (and the gradients of sum(y * dy) where asked), `infer` an inference-mode call after it, `state`
the running statistics where the path keeps them, `own_state` the module's own.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Grads, State
from bnsuite.adapters.numerics import torch_cpu_backend_flags_kept


def _arr(t):
    return None if t is None else t.detach().to("cpu").double().numpy().copy()


class Runner:
    """The eager module called directly; paths override what differs."""

    def __init__(self, bn):
        self.bn, self.m, self.torch = bn, bn.module, bn.torch
        self.facts: dict[str, str] = {}

    def call(self, xt):
        return self.m(xt)

    def to_input(self, x, requires_grad: bool):
        return self.bn._to_torch(x, requires_grad=requires_grad)

    phase = "train"  # what step() was doing when it raised: "train" (the call) or "grads" (the backward)
    last_output = None  # the output of the last call, kept for a backward that raises

    def step(self, x, dy, want_grads: bool):
        self.m.train(True)
        self.phase = "train"
        xt = self.to_input(x, want_grads)
        y = self.call(xt)
        self.last_output = self.bn._from_torch(y.contiguous())
        grads = None
        if want_grads:
            self.phase = "grads"
            self.m.zero_grad(set_to_none=True)
            (y * self.bn._to_torch(dy)).sum().backward()
            w, b = self.params()
            grads = Grads(self.bn._from_torch(xt.grad), _arr(w.grad), _arr(b.grad))
        return self.bn._from_torch(y.contiguous()), grads

    def infer(self, x):
        self.m.eval()
        with self.torch.no_grad():
            return self.bn._from_torch(self.call(self.to_input(x, False)).contiguous())

    def params(self):
        return self.m.weight, self.m.bias

    def buffers(self) -> dict:
        return dict(self.m.named_buffers())

    def state(self) -> State:
        w, b = self.params()
        bufs = self.buffers()
        return State(_arr(w), _arr(b), _arr(bufs.get("running_mean")), _arr(bufs.get("running_var")))

    def own_state(self) -> State:
        return self.bn.get_state()

    def steps_tracked(self) -> int | None:
        t = self.buffers().get("num_batches_tracked")
        return None if t is None else int(t)


class Compiled(Runner):
    """torch.compile(module, backend=..., fullgraph=..., dynamic=...); dynamo's caches are reset first, so the path's
    graphs are its own and the count of graphs says whether anything was compiled."""

    def __init__(self, bn, backend: str, fullgraph: bool, dynamic: bool):
        super().__init__(bn)
        import torch._dynamo
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
        self.counters = counters
        self.cm = self.torch.compile(self.m, backend=backend, fullgraph=fullgraph, dynamic=dynamic)

    def call(self, xt):
        y = self.cm(xt)
        self.facts["compiled"] = "yes" if self.counters["stats"]["unique_graphs"] > 0 else "no (ran eagerly)"
        return y


class Exported(Runner):
    """torch.export.export of the module in one mode, optionally run_decompositions(), run as ep.module()."""

    def __init__(self, bn, x, training: bool, decompose: bool):
        super().__init__(bn)
        self.m.train(training)
        ep = self._export(bn._to_torch(x), decompose)
        ops = sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function" and "batch_norm" in str(n.target)})
        self.facts["batch_norm_op"] = ",".join(ops) or "none"
        self.facts["buffers_to_mutate"] = ",".join(sorted(ep.graph_signature.buffers_to_mutate.values())) or "none"
        self.gm = ep.module()
        own = self.m.running_mean
        self.facts["module_shares_buffers"] = "yes" if self.gm.running_mean.data_ptr() == own.data_ptr() else "no"

    def _export(self, xt, decompose: bool):
        """torch.export.export (and run_decompositions); where TF32 is off through the per-backend API (the suite's
        numeric settings) export raises reading the legacy cuDNN flag: recorded as a fact, then exported with the
        cuDNN conv/rnn flags at their defaults for the call (TF32 is a GPU mode: no CPU number changes)."""
        torch = self.torch
        cudnn = torch.backends.cudnn
        new_api = getattr(torch.backends, "fp32_precision", "none") == "ieee"
        try:
            with torch_cpu_backend_flags_kept():  # a failed export leaves oneDNN off for the whole process otherwise
                torch.export.export(self.m, (xt,))
            self.facts["export_with_tf32_off_by_new_api"] = "ok" if new_api else "not set"
        except RuntimeError as e:
            if not new_api or "allow_tf32" not in str(e):
                raise
            self.facts["export_with_tf32_off_by_new_api"] = "error:RuntimeError"
        saved = cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision
        cudnn.conv.fp32_precision = cudnn.rnn.fp32_precision = "tf32"
        try:
            ep = torch.export.export(self.m, (xt,))
            return ep.run_decompositions() if decompose else ep
        finally:
            cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = saved

    def step(self, x, dy, want_grads):
        self.phase = "train"
        xt = self.to_input(x, want_grads)
        y = self.gm(xt)
        self.last_output = self.bn._from_torch(y)
        grads = None
        if want_grads:
            self.phase = "grads"
            for p in self.gm.parameters():
                p.grad = None
            (y * self.bn._to_torch(dy)).sum().backward()
            w, b = self.params()
            grads = Grads(self.bn._from_torch(xt.grad), _arr(w.grad), _arr(b.grad))
        return self.bn._from_torch(y), grads

    def infer(self, x):
        self.gm.eval()  # the exported module's own mode switch
        with self.torch.no_grad():
            return self.bn._from_torch(self.gm(self.to_input(x, False)))

    def params(self):
        p = dict(self.gm.named_parameters())
        return p["weight"], p["bias"]

    def buffers(self):
        return dict(self.gm.named_buffers())


class FunctionalCall(Runner):
    """torch.func.functional_call(module, {**parameters, **buffers}, x) with copies of the buffers passed in."""

    def __init__(self, bn):
        super().__init__(bn)
        self.passed = {k: v.detach().clone() for k, v in self.m.named_buffers()}

    def call(self, xt):
        from torch.func import functional_call

        return functional_call(self.m, {**dict(self.m.named_parameters()), **self.passed}, (xt,))

    def buffers(self):
        return self.passed


class ChannelsLast(Runner):
    """The eager module fed the same NCHW values stored channels_last (torch.channels_last memory format)."""

    def to_input(self, x, requires_grad):
        t = self.bn._to_torch(x).contiguous(memory_format=self.torch.channels_last).detach()
        return t.requires_grad_(requires_grad)

    def step(self, x, dy, want_grads):
        y, grads = super().step(x, dy, want_grads)
        self.facts["output_memory_format"] = "channels_last" if self._last_cl else "contiguous"
        return y, grads

    def call(self, xt):
        y = self.m(xt)
        self._last_cl = y.is_contiguous(memory_format=self.torch.channels_last) and not y.is_contiguous()
        return y


class Vmapped(Runner):
    """torch.func.vmap(module) over a leading axis of one batch, with or without replace_all_batch_norm_modules_
    (which drops the running buffers; the references kept show whether anything still moves them)."""

    def __init__(self, bn, replace: bool):
        super().__init__(bn)
        self.kept = {k: v for k, v in self.m.named_buffers()}
        if replace:
            from torch.func import replace_all_batch_norm_modules_

            replace_all_batch_norm_modules_(self.m)
        self.facts["track_running_stats"] = str(self.m.track_running_stats)

    def call(self, xt):
        from torch.func import vmap

        return vmap(self.m)(xt.unsqueeze(0)).squeeze(0)

    def buffers(self):
        return self.kept

    def own_state(self):
        return self.state()  # the module's own buffers are the kept ones (None on the module after the helper)


class FuncGrad(Runner):
    """torch.func.grad (or jacrev) of sum(y * dy) through functional_call, the buffers passed in as an argument as
    the transform's error message asks; `captured` calls the module itself inside the transform instead."""

    def __init__(self, bn, transform: str, captured: bool):
        super().__init__(bn)
        self.transform, self.captured = transform, captured
        self.passed = {k: v.detach().clone() for k, v in self.m.named_buffers()}

    def _fn(self, dyt):
        from torch.func import functional_call

        def f(p, a, b):
            y = self.m(a) if self.captured else functional_call(self.m, {**p, **b}, (a,))
            return ((y * dyt).sum(), y) if self.transform == "grad" else (y, y)
        return f

    def _apply(self, x, dy):
        import torch.func as tf

        xt, dyt = self.to_input(x, False), self.bn._to_torch(dy)
        p = {k: v.detach() for k, v in self.m.named_parameters()}
        fn = tf.grad if self.transform == "grad" else tf.jacrev
        g, y = fn(self._fn(dyt), argnums=(0, 1), has_aux=True)(p, xt, self.passed)
        if self.transform == "jacrev":  # d sum(y * dy) = the Jacobian contracted with dy
            contract = lambda j: (j * dyt.reshape(dyt.shape + (1,) * (j.dim() - dyt.dim()))).sum(tuple(range(dyt.dim())))
            g = ({k: contract(v) for k, v in g[0].items()}, contract(g[1]))
        return y, g

    def step(self, x, dy, want_grads):
        self.m.train(True)
        y, (gp, gx) = self._apply(x, dy)
        grads = Grads(self.bn._from_torch(gx), _arr(gp["weight"]), _arr(gp["bias"])) if want_grads else None
        return self.bn._from_torch(y), grads

    def infer(self, x):
        self.m.eval()
        return self.bn._from_torch(self._apply(x, np.zeros_like(x))[0])

    def buffers(self):
        return self.passed
