"""Find the first layer of a user's model whose inference-mode output depends on the batch size.

    from bnsuite.probe import find_batch_dependence
    report = find_batch_dependence(model, x)   # torch nn.Module, Keras 3 or tf_keras model, or (flax_module, variables)
    print(report)

CLI: ``python -m bnsuite.probe MODULE:FACTORY --input x.npy [--framework torch]``.
"""

from bnsuite.probe.core import LayerChange, ProbeError, ProbeReport, find_batch_dependence

__all__ = ["find_batch_dependence", "ProbeError", "ProbeReport", "LayerChange"]
