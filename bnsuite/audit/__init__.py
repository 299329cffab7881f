"""Audit every BatchNorm of a torch, Keras, tf_keras, Flax (linen or nnx) or TF1-graph model in the suite's
canonical terms.

    from bnsuite.audit import audit
    report = audit(model)   # nn.Module, keras / tf_keras Model, nnx.Module, (flax_module, variables) with x, or a
                            # tf.compat.v1.Session holding a TF1 graph
    print(report)                         # report.layers, report.warnings, report.to_json()

CLI: ``python -m bnsuite.audit MODULE:FACTORY [--input x.npy] [--json]`` or ``python3 -m bnsuite audit ...``.
"""

from bnsuite.audit.core import AuditError, AuditReport, audit

__all__ = ["audit", "AuditError", "AuditReport"]
