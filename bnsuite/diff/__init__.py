"""Compare the BatchNorm layers of two models of one architecture (two frameworks, or before and after a conversion)
and their outputs, and say what to change in the target, layer by layer.

    from bnsuite.diff import diff
    report = diff(torch_model, keras_model, x)   # x in the source's layout; report.layers, report.matches
    print(report)

CLI: ``python -m bnsuite.diff SOURCE_MODULE:FACTORY TARGET_MODULE:FACTORY [--input x.npy] [--json]`` or
``python3 -m bnsuite diff ...``.
"""

from bnsuite.diff.core import DiffError, DiffReport, diff

__all__ = ["diff", "DiffError", "DiffReport"]
