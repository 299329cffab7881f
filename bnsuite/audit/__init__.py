"""Audit every BatchNorm of a torch, Keras or Flax model in the suite's canonical terms.

    from bnsuite.audit import audit
    report = audit(model)                 # torch nn.Module, keras / tf_keras Model, or (flax_module, variables), x
    print(report)                         # report.layers, report.warnings, report.to_json()

CLI: ``python -m bnsuite.audit MODULE:FACTORY [--input x.npy] [--json]``.
"""

from bnsuite.audit.core import AuditError, AuditReport, audit

__all__ = ["audit", "AuditError", "AuditReport"]
