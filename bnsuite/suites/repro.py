"""A failing check's standalone script, as the report shows it: the case's seeded input and state, the layer built
through its adapter with that state, one training step and one inference call, each printed beside what the adapter
declares (the float64 oracle under the declaration), and the values the run recorded.

It runs in a fresh process from the folder holding bnsuite (the checkout) or with bnsuite installed:
`python repro.py`. The process environment the adapter needs (KERAS_BACKEND, ...) is set before anything is imported.
"""

from __future__ import annotations

from typing import Any

from bnsuite.adapters import registry
from bnsuite.adapters.base import BatchNormAdapter, Spec
from bnsuite.suites import data

# One training step and one inference call through the adapter, each beside the oracle; the state the oracle starts
# from is the one the layer holds (rounded to its dtype), read back through the adapter.
CALL = """\
np.set_printoptions(precision=7)
bn = load({ref!r})(spec)
decl = bn.declare()
bn.set_state(State(scale, offset, {stats}))
before = bn.get_state()
axis = spec.channel_axis
y = bn.forward(x, training=True)
after = bn.get_state()
y_ref, batch = ref.forward_train(x, before.scale, before.offset, spec.eps, axis)
print("training output, max abs difference from the oracle:", np.max(np.abs(y - y_ref)))
if before.mean is not None:
    estimator = decl.estimator_for(bn.code_path(x.shape))
    mean_ref, var_ref = ref.update_running(before.mean, before.var, batch, spec.momentum, estimator, 1)
    for what, layer, oracle in (("running mean", after.mean, mean_ref),
                                (f"running var ({{estimator}} estimator declared)", after.var, var_ref)):
        label = f"{{what}} after the step, layer:"
        print(label, layer)
        print("declared (oracle):".rjust(len(label)), oracle)
    y_inf = bn.forward(x, training=False)
    y_inf_ref = ref.forward_inference(x, after.scale, after.offset, after.mean, after.var, spec.eps, axis)
    print("inference output, max abs difference from the oracle:", np.max(np.abs(y_inf - y_inf_ref)))
"""


def adapter_setup(spec: Spec, cls: type[BatchNormAdapter]) -> str:
    """The script's middle: the process environment the adapter needs, the case's seeded input and state
    (data.recipe), and the layer called through its adapter."""
    head = ["import os", "import sys", *(f"os.environ[{k!r}] = {v!r}" for k, v in cls.process_env.items()),
            "sys.path.insert(0, os.getcwd())  # bnsuite (and the adapter's module) from the checkout it runs in",
            "from bnsuite.adapters import reference as ref", "from bnsuite.adapters.base import Spec, State",
            "from bnsuite.adapters.registry import load"]
    stats = "mean, var" if spec.track_running_stats else "None, None"
    return "\n".join([*head, data.recipe(spec), f"spec = {spec!r}",
                      CALL.format(ref=registry.load_ref(cls), stats=stats).rstrip("\n")])


def script(title: str, snippet: str, setup: str, declared: Any, observed: Any) -> str:
    """The whole script: a title line, the setup (adapter_setup, where the case built its layer with Case.layer) with
    the layer's framework code as a comment, or else that code alone, then the values the run recorded."""
    parts = [f"# {title}"]
    if snippet and setup:  # the adapter builds the layer; its framework code is shown, not run twice
        parts.append("# The layer, in its framework's own API:\n" + "\n".join(f"#   {s}" for s in snippet.splitlines()))
    parts.append(setup or snippet)
    parts.append(f"print('recorded in the run: observed', {str(observed)!r})\n"
                 f"print('                     declared', {str(declared)!r})")
    return "\n".join(p for p in parts if p)
