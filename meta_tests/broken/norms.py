"""Correct BatchNorm layers whose framework's other normalization layers (LayerNorm, GroupNorm, InstanceNorm, RMSNorm;
adapters/norms) are broken in one way."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.norms.torch_norms import TorchNorms
from meta_tests.broken.base import torch_with, wrong


class BatchAxisNorms(TorchNorms):
    """A LayerNorm whose statistics also reduce over the batch axis (one mean and variance for the whole batch)."""

    def forward(self, x, training):
        if self.spec.kind != "layer":
            return super().forward(x, training)
        torch, m = self.torch, self.module
        xt = torch.as_tensor(x, dtype=self.dtype)
        with torch.no_grad():
            mean = xt.mean()
            var = ((xt - mean) ** 2).mean()
            y = (xt - mean) / torch.sqrt(var + m.eps)
            if m.weight is not None:
                y = y * m.weight + m.bias
        return y.double().numpy()


class WrongNormsDeclaration(TorchNorms):
    """Correct torch layers, every declared fact of the norm adapter wrong. Its LayerNorm rms_scaling option is a
    true RMSNorm (mean square) while it declares Keras' variance."""

    def __init__(self, spec):
        if spec.rms_scaling:
            spec = spec.replace(kind="rms", rms_scaling=False)
        super().__init__(spec)

    @classmethod
    def declare(cls):
        decl = TorchNorms.declare()
        kinds = dict(decl.kinds)
        changes = {"layer": dict(default_eps=1e-3, default_axes="non-batch"), "group": dict(variance="one-pass"),
                   "instance": dict(default_affine=True)}
        for kind, changed in changes.items():
            kinds[kind] = wrong(dataclasses.replace(kinds[kind].value, **changed))
        return dataclasses.replace(decl, kinds=kinds, group_layout=wrong("strided"),
                                   instance_running_stats=wrong("instance"),
                                   instance_running_stats_default=wrong(True), layer_rms_scaling=wrong("variance"))


BatchAxisLayerNorm = torch_with("BatchAxisLayerNorm", "broken-layernorm-batch-axis", norms=BatchAxisNorms)
WrongNormDeclarations = torch_with("WrongNormDeclarations", "broken-norm-declarations", norms=WrongNormsDeclaration)

EXPECTED_FAILURES = {
    BatchAxisLayerNorm: {"norm_output_vs_oracle", "norm_batch_size_independent", "norm_batch_composition_independent"},
    WrongNormDeclarations: {"norm_default_eps", "norm_default_axes", "norm_default_affine", "norm_variance_algorithm",
                            "group_norm_channel_layout", "instance_norm_default_track_running_stats",
                            "instance_norm_inference_statistics", "layer_norm_rms_scaling_divides_by"},
}
