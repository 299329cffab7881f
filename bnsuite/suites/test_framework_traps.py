"""Declared framework traps outside the layer's numerics: import switches, setters that raise.

Each adapter lists them as `probes()`; a probe returns what the real framework does, compared with the declaration.
"""

from bnsuite.suites import checks as ch


def test_declared_traps(case, rec):
    for probe in case.adapter.probes():
        observed = probe.run()
        ch.equal(rec, probe.property, probe.declared.value, observed, source=probe.declared.source)
    if not case.adapter.probes():
        rec.record("traps", declared=[], observed=[], passed=True, message="no traps declared", source="")
