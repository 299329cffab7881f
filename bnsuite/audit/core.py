"""The audit: every BatchNorm of a model in the suite's canonical terms, and warnings for what the suite knows to bite.

Canonical terms (bnsuite/adapters/porting.py): momentum as the weight of the NEW batch statistic, eps added to the
variance, the input axis holding the channels, the estimator feeding the running variance, the mode the layer is in
now, whether it tracks running statistics, whether its scale and offset are frozen, and whether a training step of
the framework's own loop (torch: model.train() + forward; Keras: fit(); Flax linen: the traced call; nnx: a call in
the module's mode; TF1 graph: a train op with control_dependencies(UPDATE_OPS)) keeps its statistics still.

Warnings:
* ported momentum: a momentum on the wrong side of 0.5 for its convention (torch 0.9 or 0.99, Keras / Flax 0.1) looks
  copied from the other convention without conversion;
* ported eps: a torch or Flax layer with Keras' default 1e-3;
* frozen but moving: scale and offset frozen, yet a training step still moves the running statistics (torch in
  train mode; a TF1 graph whose UPDATE_OPS hold the layer's updates);
* frozen but batch statistics: frozen, statistics still, yet a training step normalizes with batch statistics (the
  TF1 layers' trainable=False, unlike the TF2 layer's inference mode);
* trainable=False ignored: a TF1 layer object set to trainable=False after the graph was built; the graph still
  trains it and moves its statistics;
* no running statistics: the layer normalizes with batch statistics in inference too, so outputs depend on the batch;
* odd mode: a layer whose mode differs from every BatchNorm neighbour's.
"""

from __future__ import annotations

import dataclasses
import json

from bnsuite.audit.read import BNInfo, ReadError, detect, read

# The adapters' declarations (default_eps).
DEFAULT_EPS = {"torch": 1e-5, "keras": 1e-3, "tf_keras": 1e-3, "flax": 1e-5, "flax-nnx": 1e-5, "tf1-graph": 1e-3}
MOVING = {
    "torch": "torch updates them in every training-mode forward, whatever requires_grad says; call .eval() on it "
             "after each model.train()",
    "tf1-graph": "its AssignMovingAvg ops are in UPDATE_OPS, which a train op built with "
                 "control_dependencies(UPDATE_OPS) runs; build the layer with training=False (or trainable=False) "
                 "or leave its ops out of the train op's dependencies",
}


class AuditError(ReadError):
    """Bad input to the audit; str() is one line."""


@dataclasses.dataclass
class Warning_:
    layer: str
    kind: str
    message: str


@dataclasses.dataclass
class AuditReport:
    framework: str
    layers: list[BNInfo]
    warnings: list[Warning_]

    def to_json(self) -> str:
        return json.dumps({"framework": self.framework, "layers": [l.facts() for l in self.layers],
                           "warnings": [dataclasses.asdict(w) for w in self.warnings]}, indent=1)

    def __str__(self) -> str:
        head = f"bnsuite audit: {self.framework} model, {len(self.layers)} BatchNorm layers"
        cols = "  #  name                             ch    eps       momentum(new) native  axis estimator mode" \
               "                          track frozen stats-still dtype"
        rows = []
        for i, l in enumerate(self.layers):
            mom = ("cumulative" if l.framework == "torch" else "no update") if l.momentum is None \
                else f"{l.momentum:.4g}"
            nat = "None" if l.momentum_native is None else f"{l.momentum_native:.4g}"
            rows.append(f"{i:3d}  {l.name[:32]:32s} {l.channels:5d} {l.eps:<9.3g} {mom:<13s} {nat:<7s} "
                        f"{l.channel_axis:4d} {l.estimator:9s} {l.mode[:29]:29s} {str(l.tracking):5s} "
                        f"{str(l.frozen):6s} {str(l.stats_still):11s} {l.dtype}")
        warn = [f"WARNING {w.layer} [{w.kind}]: {w.message}" for w in self.warnings] or ["no warnings"]
        return "\n".join([head, cols, *rows, *warn])


def _warnings(fw: str, layers: list[BNInfo]) -> list[Warning_]:
    out: list[Warning_] = []
    for i, l in enumerate(layers):
        m = l.momentum_native
        if m is not None and l.momentum_weights == "new" and m >= 0.5:
            out.append(Warning_(l.name, "ported momentum",
                                f"momentum {m:g} weights the NEW batch statistic in {fw}, so the running statistics "
                                f"follow the last batch almost alone; it looks like a Keras/Flax momentum copied "
                                f"without conversion: the same averaging is momentum={round(1 - m, 12):g}"))
        if m is not None and l.momentum_weights == "old" and m <= 0.5:
            out.append(Warning_(l.name, "ported momentum",
                                f"momentum {m:g} weights the OLD running value in {fw}; it looks like a torch "
                                f"momentum copied without conversion: torch's {m:g} is momentum="
                                f"{round(1 - m, 12):g} here"))
        if DEFAULT_EPS[fw] != 1e-3 and abs(l.eps - 1e-3) < 1e-12:
            out.append(Warning_(l.name, "ported eps",
                                f"eps 0.001 is Keras' default ({fw}'s is {DEFAULT_EPS[fw]:g}): right if the weights "
                                "come from a Keras model that used it, a naive port otherwise"))
        if l.frozen and not l.stats_still:
            out.append(Warning_(l.name, "frozen but moving",
                                "scale and offset are frozen but the layer is in training mode: a training step "
                                f"still moves its running statistics ({MOVING.get(fw, 'put it in inference mode')})"))
        if l.frozen and l.stats_still and l.mode.startswith("training"):
            out.append(Warning_(l.name, "frozen but batch statistics",
                                "frozen and its statistics stay still, but a training step normalizes with the "
                                "batch's statistics (the TF1 meaning of trainable=False; the TF2 layer would run in "
                                "inference mode): training outputs differ from inference outputs"))
        if l.trainable_attr is False and not (l.frozen and l.stats_still):
            out.append(Warning_(l.name, "trainable=False ignored",
                                "the layer object says trainable=False, but it was set after the graph was built: "
                                f"the graph still {'trains its scale and offset' if not l.frozen else ''}"
                                f"{' and ' if not l.frozen and not l.stats_still else ''}"
                                f"{'moves its statistics (its updates are in UPDATE_OPS)' if not l.stats_still else ''}"
                                "; build the graph with trainable=False"))
        if not l.tracking:
            out.append(Warning_(l.name, "no running statistics",
                                "the layer keeps no running statistics, so it normalizes with batch statistics in "
                                "inference too: a sample's output depends on the rest of its batch"))
        nb = [layers[j].mode for j in (i - 1, i + 1) if 0 <= j < len(layers)]
        if nb and all(n == nb[0] for n in nb) and nb[0] != l.mode:
            out.append(Warning_(l.name, "odd mode", f"mode '{l.mode}' while its neighbouring BatchNorm layers are "
                                                    f"in '{nb[0]}'"))
    return out


def audit(model, x=None, framework: str | None = None) -> AuditReport:
    """Every BatchNorm of `model` (torch.nn.Module, keras.Model / tf_keras.Model, flax.nnx.Module, (flax_module,
    variables[, apply_kwargs]) with an input `x`, or a tf.compat.v1.Session holding a TF1 graph) in canonical terms,
    with warnings. AuditError (one line) on bad input."""
    fw = framework or "model"
    try:
        fw = framework or detect(model)
        layers = read(model, x, fw)
    except ReadError as e:
        raise AuditError(str(e)) from None
    except Exception as e:  # the model's own failure while it was traced
        msg = str(e).strip().splitlines()
        raise AuditError(f"{fw}: reading the model raised {type(e).__name__}: {msg[0][:300] if msg else ''}") \
            from None
    if not layers:
        raise AuditError(f"no BatchNorm layer in this {fw} model ({type(model).__qualname__}): nothing to audit")
    return AuditReport(fw, layers, _warnings(fw, layers))
