"""The deploy lane: a model trained in its framework, exported, and run in a deployment runtime.

The contract is small (the ONNX backend API's prepare/run is the model):

* a ``DeployLane`` (one per source framework, named by an adapter's ``capabilities["deploy"]``) lists its ``routes``
  (exporter x mode x runtime) and its ``declared`` facts per export, builds a ``Trained`` model (a lone BatchNorm
  layer or the suite's small conv-BN network, trained a few steps so its running statistics are not the defaults)
  and exports it into a folder the caller owns (``export``);
* the runtimes are shared by every lane (``runtimes.run``: ONNX Runtime with graph optimizations off and fully on,
  ONNX's reference evaluator, OpenVINO, LiteRT), each in a worker process with a timeout.

Frameworks, exporters and runtimes are imported inside the methods only, so importing the lane stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from bnsuite.adapters.base import Cited

MODELS = ("layer", "net")  # a lone BatchNorm layer; the "conv_bn_relu_dense" network of adapters/nets
NET_ARCH = "conv_bn_relu_dense"
CHANNELS = 3
IMAGE = (6, 6)
EPS = 1e-3  # not any framework's default, so a dropped eps shows
MOMENTUM = 0.3  # canonical (weight of the new batch statistic); not any framework's default either
TRAIN_STEPS = 3


# The Python packages each exporter and runtime needs (pinned in requirements/all.txt, the "deploy" extra): one that
# is not installed skips its cases with that reason (docs/deploy.md lists what installs where).
NEEDS: dict[str, tuple[str, ...]] = {
    "torch.onnx-ts": ("onnx",), "torch.onnx-dynamo": ("onnx", "onnxscript"), "openvino-from-torch": ("openvino",),
    "litert-torch": ("litert_torch",), "keras.export-onnx": ("onnx", "tf2onnx"), "tf2onnx": ("onnx", "tf2onnx"), "tflite": (),
    "ort-off": ("onnxruntime", "onnx"), "ort-all": ("onnxruntime", "onnx"), "onnx-reference": ("onnx",),
    "openvino": ("openvino",), "openvino-f32": ("openvino",), "litert": ("ai_edge_litert",),
}


def missing_packages(*steps: str) -> list[str]:
    """The packages the given exporters and runtimes need that are not installed."""
    import importlib.util

    return [p for step in steps for p in NEEDS.get(step, ()) if importlib.util.find_spec(p) is None]


@dataclasses.dataclass(frozen=True)
class Route:
    exporter: str  # e.g. "torch.onnx-ts", "tflite"
    mode: str  # e.g. "eval", "training", "preserve-frozen", "int8"
    runtime: str  # a key of worker.RUNTIMES

    @property
    def export(self) -> tuple[str, str]:
        return self.exporter, self.mode

    @property
    def id(self) -> str:
        return f"{self.exporter}-{self.mode}-{self.runtime}"


@dataclasses.dataclass(frozen=True)
class ExportFacts:
    """What an export is declared to carry, each with its source.

    statistics: what the exported graph normalizes with ("running" or "batch");
    bn_node: "BatchNormalization" where the exporter writes the ONNX operator, "none" where it folds BN into the
      convolution before it or lowers it to Mul and Add (then eps and momentum survive only numerically), "n/a" for
      a non-ONNX format;
    momentum_attr: the momentum written into the node (ONNX's convention: the weight of the OLD value), or None;
    keeps_state: whether the exported running statistics are the model's state before the export;
    dynamic_batch: whether the exported input's batch dimension is symbolic;
    precision: the unit roundoff's dtype the exported graph computes in ("float32", "float16", "int8").
    """

    statistics: Cited[str]
    bn_node: Cited[str]
    momentum_attr: Cited[float | None]
    keeps_state: Cited[bool]
    dynamic_batch: Cited[bool]
    precision: Cited[str] = Cited("float32", "the exporter keeps the model's float32")

    @classmethod
    def non_onnx_inference(cls, fmt: str, traced: str, dynamic_batch: Cited[bool],
                           precision: Cited[str]) -> "ExportFacts":
        """An export to `fmt` (not ONNX) of an inference-mode trace (`traced`: the source that says so): the running
        statistics and the state unchanged (both follow from the trace), no BatchNorm node or momentum to read."""
        return cls(statistics=Cited("running", traced), bn_node=Cited("n/a", f"{fmt}, not ONNX"),
                   momentum_attr=Cited(None, "inference only"), keeps_state=Cited(True, traced),
                   dynamic_batch=dynamic_batch, precision=precision)


@dataclasses.dataclass
class Trained:
    """A model trained TRAIN_STEPS steps in its framework.

    infer(x) / train_output(x): the framework's own inference output and training-mode output (the latter on a copy:
    the state does not move). weights: canonical float64 weights (adapters/nets/reference_net.py names; a layer's are
    "bn.scale", "bn.offset", "bn.mean", "bn.var"). handle: the framework object the exporters take (opaque).
    """

    kind: str
    channels_last: bool
    infer: Callable[[np.ndarray], np.ndarray]
    train_output: Callable[[np.ndarray], np.ndarray]
    weights: dict[str, np.ndarray]
    handle: Any
    seconds: float = 0.0


@dataclasses.dataclass
class Export:
    path: str
    fmt: str  # "onnx", "openvino", "tflite"
    seconds: float
    bn_outputs: tuple[str, ...] = ()  # a training-mode node's running-statistics outputs (ONNX tensor names)


class DeployLane:
    """One source framework's exporters (see the module docstring)."""

    framework: str = ""
    source_estimator: Cited[str] = Cited("unbiased", "not declared")  # the framework's running-variance estimator
    routes: tuple[Route, ...] = ()

    def __init__(self, adapter_cls):
        self.adapter_cls = adapter_cls

    def declared(self, exporter: str, mode: str, model: str) -> ExportFacts:
        raise NotImplementedError

    def train(self, kind: str, batches: list[np.ndarray], frozen: bool = False) -> Trained:
        """Build `kind` with EPS and MOMENTUM and train it on `batches` (one step each). frozen: the BatchNorm is then
        frozen with the framework's idiom (its running statistics and mode fixed) while the model stays in training."""
        raise NotImplementedError

    def export(self, model: Trained, exporter: str, mode: str, folder: str, example: np.ndarray) -> Export:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}

    def declared_folding(self, route: Route, model: str) -> Cited[str] | None:
        """What the runtime executes in place of BatchNorm: "BatchNorm kept", "folded" (into the convolution before
        it) or "elementwise" (a per-channel multiply and add); None where not declared (then only recorded)."""
        return None

    def traps(self) -> dict[str, tuple[Cited[str], Callable[[], str]]]:
        """Declared traps on the way to an export (property -> (declared outcome, a function that observes it))."""
        return {}
