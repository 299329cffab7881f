"""Deliberately broken adapters, one module per semantic area. Each behaves like a framework that differs from its
declaration in ONE way; meta_tests/test_broken_adapters.py asserts that the conformance suites fail on exactly the
properties that name that way.

They wrap torch (fast, always installed) and change one behaviour or one declared value; base.py holds what they
share (a deliberately wrong declared value, a declaration with some values changed, a wrongly converted spec, the
correct torch layer with one broken capability).

Adding one: write the class in its area's module, then declare what it breaks in that module's
``EXPECTED_FAILURES[Cls] = {"property", ...}`` (an area this package does not have yet: a new module, listed in
AREAS below). That declaration also decides where it runs: the meta test runs each broken adapter only in the suite
tests that write one of its expected properties whole (``"property"`` as a string literal), so a breakage costs a few
cases, not the whole suite. An adapter's set also names the checks that see its breakage under another name (a
running statistic ported or recomputed elsewhere): listing them keeps ``test_every_check_can_fail`` covering them.
A property no suite writes whole (one a declared Probe names, say) needs the module that checks it in the area's
``SEES[Cls] = {"test_<area>.py", ...}``; ``test_every_expected_property_is_seen`` says when.
"""

from __future__ import annotations

from meta_tests.broken import (blocks, compiled, declarations, deploy, edge_inputs, folding, layer, mindspore_layer,
                               mixed_precision, models, mlx_layer, networks, norms, paddle_layer, replicas,
                               tinygrad_layer, training_loops)

AREAS = (layer, declarations, networks, norms, blocks, replicas, edge_inputs, mixed_precision, folding, training_loops,
         deploy, compiled, models, mindspore_layer, paddle_layer, mlx_layer, tinygrad_layer)

# Which properties each broken adapter must fail on (checked by meta_tests/test_broken_adapters.py).
EXPECTED_FAILURES: dict[type, set[str]] = {cls: props for area in AREAS
                                           for cls, props in area.EXPECTED_FAILURES.items()}

# Extra suite modules or tests a broken adapter runs in, for expected properties that no suite writes whole; every
# other place is derived from EXPECTED_FAILURES.
SEES: dict[type, set[str]] = {cls: where for area in AREAS for cls, where in getattr(area, "SEES", {}).items()}

# Parameter values a broken adapter's cases are limited to where its breakage lives in one parameter of a test (one
# folding path): {Cls: {"parameter": (values, ...)}}; a case whose parameter takes another value is deselected.
ONLY_PARAMS: dict[type, dict[str, tuple]] = {cls: params for area in AREAS
                                             for cls, params in getattr(area, "ONLY_PARAMS", {}).items()}
