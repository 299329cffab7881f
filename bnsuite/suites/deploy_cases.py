"""The deploy suite's shared set-up, one job: train each model once, export it once per exporter and run it once per
runtime, in one temporary folder per adapter that is always removed; every failure is kept and raised again by
every case that needs the failed step, so it costs those cases only. Also the float64 oracle of each model.
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import time

import numpy as np
import pytest

from bnsuite.adapters import capabilities, reference
from bnsuite.adapters.base import Cited
from bnsuite.lanes import deploy as dl
from bnsuite.suites import data

BATCH, SMALL_BATCH = 8, 3

# The ONNX specification's training mode (what ORT and onnx.reference return as running statistics).
ONNX_TRAINING_ESTIMATOR = Cited(
    "biased", "onnx/reference/ops/op_batch_normalization.py _batchnorm_training_mode: saved_var = x.var(axis) "
              "(population variance); running_var = input_var * momentum + saved_var * (1 - momentum), momentum "
              "weighting the OLD value (ONNX Operators.md, BatchNormalization-15)")


class StepFailed(Exception):
    """A training, export or runtime step failed; raised again for every case that needs it."""


def lane_class(adapter_cls):
    """The adapter's deploy lane class, or None where it names none (CapabilityBroken propagates)."""
    try:
        return capabilities.load(adapter_cls, "deploy")
    except capabilities.CapabilityAbsent:
        return None


def _routes(adapter_cls) -> tuple:
    try:
        lane = lane_class(adapter_cls)
    except capabilities.CapabilityBroken:
        return ()  # the case itself fails on it, through capabilities.require
    return tuple(getattr(lane, "routes", ()) if lane else ())


def routes_of(case) -> list:
    """The routes of the case's deploy lane, joint with the case (the suite's PER_CASE); one "no-route" where it has
    none (the case skips, or fails where the lane is broken)."""
    return [pytest.param(r, id=r.id) for r in _routes(case.adapter)] or [pytest.param(None, id="no-route")]


def exports_of(case) -> list:
    exports = dict.fromkeys(r.export for r in _routes(case.adapter))
    return [pytest.param(e, id="-".join(e)) for e in exports] or [pytest.param(None, id="no-export")]


def inputs(seed: int) -> np.ndarray:
    """A seeded NCHW batch with a mean and spread per channel (so a wrong axis or a dropped statistic shows)."""
    rng = np.random.default_rng(data.seed_for(seed))
    x = rng.standard_normal((BATCH, dl.CHANNELS, *dl.IMAGE))
    x = x * np.array([2.0, 0.5, 1.5]).reshape(1, -1, 1, 1) + np.array([1.0, -2.0, 0.5]).reshape(1, -1, 1, 1)
    return x.astype(np.float32).astype(np.float64)


class Session:
    """One adapter's lane: its models, exports and runs, each made once."""

    def __init__(self, lane):
        self.lane = lane
        self.folder = tempfile.mkdtemp(prefix="bnsuite-deploy-")
        self._done: dict = {}
        self.cost: dict[str, float] = collections.defaultdict(float)  # step kind -> wall seconds
        self.batches = [inputs(100 + i) for i in range(dl.TRAIN_STEPS)]
        self.x = inputs(200)
        self.x_small = self.x[:SMALL_BATCH]

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)

    def _once(self, key, what: str, fn):
        if key not in self._done:
            t0 = time.perf_counter()
            try:
                self._done[key] = ("ok", fn())
            except Exception as e:  # the framework's, exporter's or runtime's failure: this step's cases fail
                text = str(e) if len(str(e)) < 1200 else f"{str(e)[:400]} [...] {str(e)[-800:]}"
                self._done[key] = ("failed", f"{what} failed: {type(e).__name__}: {text}")
            self.cost[what.split(" ")[0]] += time.perf_counter() - t0
        status, value = self._done[key]
        if status == "failed":
            raise StepFailed(value)
        return value

    # layout: the oracle and the data are NCHW; a channels-last model takes and gives NHWC.
    def feed(self, trained: dl.Trained, x: np.ndarray) -> np.ndarray:
        return np.moveaxis(x, 1, -1).copy() if trained.channels_last else x

    def back(self, trained: dl.Trained, kind: str, y: np.ndarray) -> np.ndarray:
        return np.moveaxis(y, -1, 1) if trained.channels_last and kind == "layer" else y

    def model(self, kind: str, frozen: bool) -> dl.Trained:
        return self._once(("model", kind, frozen), f"train {kind}",
                          lambda: self._train(kind, frozen))

    def _train(self, kind, frozen):
        probe = self.lane.train(kind, [], frozen)  # the layout only
        return self.lane.train(kind, [self.feed(probe, b) for b in self.batches], frozen)

    def export(self, kind: str, exporter: str, mode: str) -> dl.Export:
        trained = self.model(kind, mode.endswith("frozen"))
        return self._once(("export", kind, exporter, mode), f"export {exporter} ({mode}) of the {kind}",
                          lambda: self.lane.export(trained, exporter, mode, self.folder,
                                                   self.feed(trained, self.x)))

    def run(self, kind: str, route: dl.Route):
        """(outputs of x, outputs of x_small, runtime info); outputs[0] the model's output (NCHW for a layer)."""
        from bnsuite.lanes.deploy import runtimes

        trained = self.model(kind, route.mode.endswith("frozen"))
        exp = self.export(kind, route.exporter, route.mode)

        def go():
            outs, info = runtimes.run(route.runtime, exp.path, [self.feed(trained, self.x),
                                                                self.feed(trained, self.x_small)],
                                      expose=exp.bn_outputs)
            return [self.back(trained, kind, outs[0][0]), *outs[0][1:]], \
                [self.back(trained, kind, outs[1][0]), *outs[1][1:]], info
        return self._once(("run", kind, route), f"runtime {route.runtime} on {route.exporter} ({route.mode})", go)


def oracle(kind: str, weights: dict, x: np.ndarray, batch_stats: bool):
    """(y, refnet or None): the float64 oracle's output for `x` (NCHW) with the trained `weights`."""
    if kind == "layer":
        w = weights
        if batch_stats:
            return reference.forward_train(x, w["bn.scale"], w["bn.offset"], dl.EPS, 1)[0], None
        return reference.forward_inference(x, w["bn.scale"], w["bn.offset"], w["bn.mean"], w["bn.var"], dl.EPS,
                                           1), None
    from bnsuite.adapters.nets import ReferenceNet

    net = ReferenceNet(dl.NET_ARCH, weights, channels_last=False, eps=dl.EPS, momentum=dl.MOMENTUM,
                       estimator="unbiased")
    return net.forward(x, training=batch_stats), net


def running_stats_after(x: np.ndarray, mean0: np.ndarray, var0: np.ndarray, momentum: float) -> dict:
    """The running statistics after one training-mode step on `x` from the exported (mean0, var0) with the source's
    canonical `momentum` (weight of the new statistic; an exporter converts it into ONNX's weight of the old value),
    with each variance estimator: {"biased": (mean, var), "unbiased": (mean, var)}."""
    moments = reference.moments(x, 1)
    return {est: reference.update_running(mean0, var0, moments, momentum, est, step=1)
            for est in ("biased", "unbiased")}


def bn_input(weights: dict, x: np.ndarray) -> np.ndarray:
    """The network's first BatchNorm's input in a training-mode forward of `x` (the oracle's)."""
    _, net = oracle("net", weights, x, True)
    return next(lay.x for lay in net.layers if lay.op[0] == "bn")


def statistics_used(y: np.ndarray, ys: dict, tol) -> str:
    """Which statistics `y` was normalized with: the one candidate within `tol`; where the runtime's precision leaves
    both within it, the nearer one when it is nearer than half the candidates' distance (it cannot then be the
    other), else "ambiguous"."""
    from bnsuite.suites import checks

    found = checks.classify(y, ys, tol)
    if not found.startswith("ambiguous"):
        return found
    errs = {k: float(np.max(np.abs(y - v))) for k, v in ys.items()}
    near = min(errs, key=errs.get)
    gap = float(np.max(np.abs(ys["running"] - ys["batch"])))
    return near if errs[near] < gap / 2 else found
