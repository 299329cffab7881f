"""Every tinygrad capability builds and runs a case on the case's device, not on tinygrad's process default (the CPU
here): otherwise a "gpu" case on a machine with a GPU would measure the CPU under the GPU's name.

No GPU is needed: the gpu target is pointed at tinygrad's PYTHON device (its UOp interpreter, present in every
install), and each capability's tensors must land there while the process default stays the CPU.
"""

import numpy as np
import pytest

pytest.importorskip("tinygrad", reason="tinygrad is not installed in this environment")

from bnsuite.adapters import nets, tinygrad_bn  # noqa: E402
from bnsuite.adapters.base import Spec, State  # noqa: E402
from bnsuite.adapters.mixed_precision import tinygrad_mixed  # noqa: E402
from bnsuite.adapters.norms import NormSpec  # noqa: E402
from bnsuite.adapters.norms.tinygrad_norms import TinygradNorms  # noqa: E402
from bnsuite.adapters.registry import load  # noqa: E402

STAND_IN = "PYTHON"


@pytest.fixture
def gpu_is_python(monkeypatch):
    """"gpu" cases target tinygrad's PYTHON device for the duration of a test."""
    from tinygrad import Device

    monkeypatch.setattr(tinygrad_bn, "GPU_DEVICE", STAND_IN)
    tinygrad_bn.device_target.cache_clear()
    yield
    tinygrad_bn.device_target.cache_clear()
    assert Device.DEFAULT != STAND_IN, "the process default device moved"


def _devices(tensors) -> set[str]:
    return {str(t.device) for t in tensors if t is not None}


def test_a_gpu_network_lives_on_the_gpu_target(gpu_is_python):
    cls = load("tinygrad")
    w = nets.init_weights("conv_bn_relu_dense", seed=0)
    net = nets.build_network(cls, "conv_bn_relu_dense", w, device="gpu", channels_last=False, eps=1e-3,
                             momentum=0.1)
    assert _devices(net._tensors().values()) == {STAND_IN}, "network weights not on the case's device"
    assert _devices([net._in(np.zeros((1, 3, 4, 4)))]) == {STAND_IN}, "network input not on the case's device"


def test_a_gpu_norm_lives_on_the_gpu_target(gpu_is_python):
    norm = TinygradNorms(NormSpec(kind="group", num_features=4, groups=2, channels_last=False, device="gpu"))
    assert _devices([norm.layer.weight, norm.layer.bias, norm._t(np.zeros((2, 4, 3, 3)))]) == {STAND_IN}


def test_a_gpu_mixed_precision_input_lives_on_the_gpu_target(gpu_is_python, monkeypatch):
    cls = load("tinygrad")
    seen = []
    real_in = cls._in

    def spy(self, x):
        t = real_in(self, x)
        seen.append(str(t.device))
        return t

    monkeypatch.setattr(cls, "_in", spy)
    spec = Spec(num_features=2, rank=2, device="gpu", use_defaults=True)
    c = np.ones(2)
    run = tinygrad_mixed.step(cls, "defaults-float16", spec, State(scale=c, offset=0 * c, mean=0 * c, var=c),
                              np.arange(8.0).reshape(4, 2))
    assert seen and set(seen) == {STAND_IN}, f"mixed-precision input made on {seen}"
    assert run.output_dtype == "float32"
