"""The torch lanes leave the process's backend flags as they found them. torch.export switches oneDNN and NNPACK off
and, when it raises (it does under the suite's fp32_precision = "ieee"), never switches them back (finding
torch_failed_export_leaves_onednn_disabled): without the lanes' guard every torch case after the compile lane ran
its convolutions without oneDNN."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")


@pytest.fixture
def ieee():
    """The suite's numeric settings (fp32_precision "ieee", under which torch.export raises) for this test only."""
    from bnsuite.adapters.numerics import torch_full_fp32

    b = torch.backends
    kinds = [b, b.cuda.matmul, b.cudnn, b.cudnn.conv, b.cudnn.rnn]
    saved = [k.fp32_precision for k in kinds]
    torch_full_fp32()
    yield
    for k, value in zip(kinds, saved):
        k.fp32_precision = value


def flags() -> dict:
    return {"oneDNN": torch._C._get_mkldnn_enabled(), "NNPACK": torch._C._get_nnpack_enabled(),
            "oneDNN fp32_precision": torch._C._get_fp32_precision_getter("mkldnn", "all")}


def test_the_deploy_trap_sees_the_leak_and_puts_the_flags_back():
    from bnsuite.lanes.deploy.torch_deploy import _onednn_after_failed_export

    before = flags()
    assert _onednn_after_failed_export() == "oneDNN and NNPACK disabled"
    assert flags() == before


@pytest.mark.parametrize("path", ["export-train", "export-eval-run_decompositions"])
def test_the_compile_lane_export_paths_keep_the_flags(path, ieee):
    from bnsuite.adapters.base import Spec
    from bnsuite.adapters.torch_bn import TorchBatchNorm
    from bnsuite.lanes.compile.torch_compile import TorchCompile
    from bnsuite.suites import data

    before = flags()
    spec = Spec(num_features=3, rank=4, eps=1e-5)
    xs = data.batches(spec, 2)
    run = TorchCompile(TorchBatchNorm).run(path, spec, data.state(spec), xs, data.cotangent(xs[0]), grads=False)
    assert run.facts.get("export_with_tf32_off_by_new_api") == "error:RuntimeError", run.facts
    assert flags() == before
